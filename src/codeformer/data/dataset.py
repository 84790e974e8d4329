"""A training dataset over a folder of aligned high-quality face crops, with on-the-fly degradation.

Randomness: every item draws from its own generators, seeded by (seed, epoch, index) through
`np.random.SeedSequence`, so an item's flip and degradations do not depend on the number of DataLoader
workers, the access order or the other items. Call `set_epoch(e)` before each epoch (in every worker
process: with persistent workers, re-create the DataLoader iterator so the workers see the new epoch).

Precomputed code indices ("codes file"): a mapping from image file stem to the HQ VQGAN's latent indices of
the image (`orig`) and of its horizontal mirror (`hflip`), each an integer tensor of shape (16, 16) or
(256,) for 512 faces (row-major). Two encodings are accepted:

- `.safetensors`: flat keys `"orig/<stem>"` and `"hflip/<stem>"`;
- anything else (`.pt`/`.pth`): a `torch.save`d dict `{"orig": {stem: tensor}, "hflip": {stem: tensor}}`,
  the layout of the official `latent_gt_code1024.pth`; read with `weights_only=True`.

`save_codes` writes either form; `load_codes` reads both.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from codeformer.atomic import atomic_path
from codeformer.config import DegradationConfig
from codeformer.data.degradation import degrade
from codeformer.data.images import IMAGE_EXTENSIONS, ImageReadError, is_image_path, read_image, rgb_float

__all__ = ["FaceFolderDataset", "list_images", "load_codes", "save_codes"]

logger = logging.getLogger(__name__)


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root` (recursive; `data.images.is_image_path`: extension in any case, hidden
    files skipped), sorted by relative path."""
    root = Path(root)
    files = [p for p in root.rglob("*") if is_image_path(p) and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size×size: area averaging when shrinking, bicubic (clipped to [0, 1]) when enlarging."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return np.clip(cv2.resize(img, (size, size), interpolation=interpolation), 0.0, 1.0)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 float32 in [0, 1] → 3×H×W float32 tensor in [-1, 1]."""
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    return torch.from_numpy(chw) * 2.0 - 1.0


def save_codes(path: str | Path, orig: Mapping[str, torch.Tensor], hflip: Mapping[str, torch.Tensor]) -> None:
    """Write a codes file (format in the module docstring).

    A `.safetensors` suffix selects safetensors, any other suffix torch.save. Writes to a temporary file,
    then renames. Tensors are stored as int64 on the CPU.
    """
    path = Path(path)
    if set(orig) != set(hflip):
        raise ValueError("save_codes: `orig` and `hflip` must have the same stems")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            flat = {f"{kind}/{stem}": t.detach().to("cpu", torch.int64).contiguous()
                    for kind, table in (("orig", orig), ("hflip", hflip)) for stem, t in table.items()}
            save_file(flat, str(tmp))
        else:
            torch.save({"orig": {s: t.detach().to("cpu", torch.int64) for s, t in orig.items()},
                        "hflip": {s: t.detach().to("cpu", torch.int64) for s, t in hflip.items()}}, tmp)


def load_codes(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read a codes file into `{"orig": {stem: LongTensor}, "hflip": {stem: LongTensor}}`.

    Raises ValueError naming the file when the layout is not the documented one.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        codes: dict[str, dict[str, torch.Tensor]] = {"orig": {}, "hflip": {}}
        for key, tensor in load_file(str(path)).items():
            kind, _, stem = key.partition("/")
            if kind not in codes or not stem:
                raise ValueError(f"{path}: unexpected key {key!r}; expected 'orig/<stem>' or 'hflip/<stem>'")
            codes[kind][stem] = tensor.long()
        return codes
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or set(raw) != {"orig", "hflip"}:
        raise ValueError(f"{path}: expected a dict with exactly the keys 'orig' and 'hflip'")
    return {kind: {str(s): t.long() for s, t in raw[kind].items()} for kind in ("orig", "hflip")}


class FaceFolderDataset(Dataset):
    """Aligned HQ faces from a folder, each returned with its synthetic LQ versions.

    Args:
        root: folder searched recursively for images (`data.images.IMAGE_EXTENSIONS`), read by
            `data.images.read_image` (any size; grey, RGB or RGBA; 8 or 16 bit; EXIF orientation applied).
            Each image is resized to `size`×`size` (area when shrinking, bicubic when enlarging).
        size: side of the HQ crop (512 for the official recipe).
        degradations: name → config; each produces `lq_<name>`. None or empty: HQ only (stage 1).
        flip: random horizontal flip with probability 0.5 (applied to HQ before degrading).
        seed: base seed of the per-item generators.
        codes_path: optional codes file (module docstring); every image stem must be in it.

    Item (`dataset[i]`): dict with
        `hq`: 3×size×size float32 in [-1, 1];
        `lq_<name>`: same shape and range, one per degradation (8-bit quantised before scaling);
        `flipped`: bool;
        `codes` (only with `codes_path`): int64 (N,) latent indices, row-major, of the flipped image when
        `flipped` is true.

    Unreadable files are logged once (a warning naming the file), collected in `bad_files` (per process)
    and replaced by the next readable image in folder order; that replacement item is exactly what its own
    index would return.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = 512,
        degradations: Mapping[str, DegradationConfig] | None = None,
        flip: bool = True,
        seed: int = 0,
        codes_path: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"face folder {self.root} does not exist or is not a folder")
        self.files = list_images(self.root)
        if not self.files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise FileNotFoundError(f"face folder {self.root} contains no images ({exts}) at any depth")
        self.size = size
        self.degradations = dict(degradations or {})
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.bad_files: set[Path] = set()
        self.codes = None if codes_path is None else self._checked_codes(Path(codes_path))

    def _checked_codes(self, path: Path) -> dict[str, dict[str, torch.Tensor]]:
        codes = load_codes(path)
        stems = [p.stem for p in self.files]
        if len(set(stems)) != len(stems):
            dup = sorted({s for s in stems if stems.count(s) > 1})[:5]
            raise ValueError(f"{self.root}: codes are keyed by file stem, but stems repeat: {dup}")
        for kind in ("orig", "hflip"):
            missing = [s for s in stems if s not in codes[kind]]
            if missing:
                raise ValueError(f"{path}: no '{kind}' codes for {len(missing)} image(s), e.g. {missing[:5]}")
        return codes

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that (with seed and index) determines every item's randomness."""
        self.epoch = epoch

    def _rng(self, index: int, stream: str) -> np.random.Generator:
        # One generator per (seed, epoch, index, stream): adding a degradation leaves the others unchanged.
        key = zlib.crc32(stream.encode("utf-8"))
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index, key]))

    def _load(self, index: int) -> np.ndarray | None:
        path = self.files[index]
        if path in self.bad_files:
            return None
        try:
            img = rgb_float(read_image(path))
        except ImageReadError as e:
            self.bad_files.add(path)
            logger.warning("skipping unreadable training image %s", e)
            return None
        return _resize_square(img, self.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | bool]:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for offset in range(n):
            item_index = (index + offset) % n
            hq = self._load(item_index)
            if hq is not None:
                return self._make_item(item_index, hq)
        raise RuntimeError(f"no readable image in {self.root}: all {n} files failed to decode")

    def _make_item(self, index: int, hq: np.ndarray) -> dict[str, torch.Tensor | bool]:
        flipped = bool(self.flip and self._rng(index, "flip").random() < 0.5)
        if flipped:
            hq = np.ascontiguousarray(hq[:, ::-1])
        item: dict[str, torch.Tensor | bool] = {"hq": _to_tensor(hq), "flipped": flipped}
        for name, cfg in self.degradations.items():
            item[f"lq_{name}"] = _to_tensor(degrade(hq, cfg, self._rng(index, f"lq_{name}")))
        if self.codes is not None:
            table = self.codes["hflip" if flipped else "orig"]
            item["codes"] = table[self.files[index].stem].reshape(-1).long()
        return item
