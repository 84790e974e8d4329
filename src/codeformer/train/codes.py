"""Precompute the HQ code indices of a face folder with a VQGAN (the official `latent_gt_code1024.pth`).

For each image (resized to the VQGAN's size, as the training dataset does) the frozen VQGAN's nearest codes of
the image (`orig`) and of its horizontal mirror (`hflip`) are stored, keyed by file stem, as (N,) int64
row-major indices; `FaceFolderDataset(codes_path=...)` then serves them as `codes` without running a VQGAN.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import load_state_dict_strict, read_state_dict
from ..config import VQGANConfig
from ..data.dataset import FaceFolderDataset, save_codes
from ..models.vqgan import VQAutoEncoder


@torch.no_grad()
def codes_of(vqgan: VQAutoEncoder, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HQ faces (B, 3, S, S) in [-1, 1] → (orig, hflip) code indices, each (B, N) int64, row-major."""
    orig = vqgan.encode(hq).indices.flatten(1)
    hflip = vqgan.encode(torch.flip(hq, dims=[3])).indices.flatten(1)
    return orig, hflip


def compute_codes(vqgan_path: str | Path, data: str | Path, output: str | Path, cfg: VQGANConfig,
                  batch_size: int = 8, device: str = "cpu", progress: bool = True) -> str:
    """Write the codes file of every readable image under `data`; returns a one-line report.

    Unreadable images are skipped (and counted); stems must be unique (they are the keys).
    """
    vqgan = VQAutoEncoder.from_config(cfg)
    load_state_dict_strict(vqgan, read_state_dict(vqgan_path), vqgan_path)
    vqgan = vqgan.eval().to(device)
    dataset = FaceFolderDataset(data, size=cfg.img_size, degradations=None, flip=False)
    stems = [p.stem for p in dataset.files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{data}: codes are keyed by file stem, but some stems repeat")
    orig: dict[str, torch.Tensor] = {}
    hflip: dict[str, torch.Tensor] = {}
    indices = list(range(len(dataset)))
    for start in tqdm(range(0, len(indices), batch_size), disable=not progress, unit="batch"):
        chunk = indices[start:start + batch_size]
        items = [dataset[i] for i in chunk]
        # an unreadable file is replaced by the next readable one in the dataset: drop it here
        keep = [(i, item) for i, item in zip(chunk, items, strict=True) if dataset.files[i] not in dataset.bad_files]
        if not keep:
            continue
        hq = torch.stack([item["hq"] for _, item in keep]).to(device)
        codes_o, codes_h = codes_of(vqgan, hq)
        for row, (i, _) in enumerate(keep):
            orig[stems[i]] = codes_o[row].cpu()
            hflip[stems[i]] = codes_h[row].cpu()
    save_codes(output, orig, hflip)
    return (f"{output}: codes of {len(orig)} faces ({len(dataset.bad_files)} unreadable skipped), "
            f"{cfg.codebook_size}-entry codebook, {codes_o.shape[1] if orig else 0} positions each")
