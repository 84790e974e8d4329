"""Shared fixtures: paths to ../shared, tiny model configs, and the parity kit's filled weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PARITY = SHARED / "parity"
DATA = SHARED / "data"

# Tiny configs: the same architecture with fewer, narrower blocks (GroupNorm needs multiples of 32 channels).
TINY_VQGAN = dict(img_size=32, nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(8,), codebook_size=16,
                  emb_dim=32)
TINY_CODEFORMER = dict(dim_embd=32, n_head=4, n_layers=2, codebook_size=16, latent_size=64, connect_list=(16, 32),
                       img_size=32, nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(8,), emb_dim=32)


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)  # the parity reference was computed with 2 threads


def _fill_module():
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def parity_ref() -> dict[str, np.ndarray]:
    with np.load(PARITY / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def parity_meta() -> dict:
    return json.loads((PARITY / "reference.json").read_text())


@pytest.fixture(scope="session")
def filled_checkpoint(tmp_path_factory, parity_meta):
    """Return a function model name → path of the filled weights saved in the official .pth layout."""
    fill = _fill_module()
    folder = tmp_path_factory.mktemp("parity")
    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        if model not in made:
            keys = json.loads((PARITY / f"keys_{model}.json").read_text())
            sd = fill.fill_state_dict(str(PARITY / f"keys_{model}.json"), seed=parity_meta["fill_seed"])
            assert fill.state_dict_sha256(sd) == parity_meta["state_dict_sha256"][model]
            path = folder / f"{model}_synth.pth"
            torch.save({keys["checkpoint_param_key"]: sd}, path)
            made[model] = path
        return made[model]

    return make


def to_input(u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) RGB uint8 → (B, 3, H, W) float32 in [-1, 1], as the official script does."""
    x = (u8.astype(np.float64) / 255.0).astype(np.float32)
    x = torch.from_numpy(x)
    if x.dim() == 3:
        x = x[None]
    return ((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
