"""Folder evaluation behind `codeformer evaluate`: pair files by stem, compute every metric that applies.

Pairs: each restored image REL (any image extension) is matched with the reference and low-quality images of the
same stem (file name without extension) in the other folders. A restored image without a partner is listed under
`missing`, never fatal; so is a reference image that nothing was restored for. Per image:

- always: no-reference `sharpness` and `noise_sigma` of the restored image (see `metrics.noref`);
- with a reference of the same size: PSNR and SSIM in RGB and on Y, LPIPS, identity (dlib embedding, cosine and
  L2), and the 5-point landmark distance divided by the reference face size (dlib 68-point landmarks);
- with a low-quality input: identity restored → input (any size), and the input's sharpness and noise.

FID is computed once between the restored set and the reference set (every readable image of each folder).
Metrics whose models are not given (`Metrics` fields left None) are skipped and the protocol says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from codeformer.data.images import ImageReadError, is_image_path, read_image, rgb_float
from codeformer.metrics.fid import FIDInceptionV3, frechet_distance_of_features
from codeformer.metrics.fidelity import LPIPSMetric, psnr, ssim
from codeformer.metrics.identity import IdentityEmbedder, NoFaceFound, landmark_distance
from codeformer.metrics.noref import noise_sigma, sharpness

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "Metrics", "evaluate_folders", "image_files", "load_rgb8", "pair_by_stem"]

# Landmarks: any callable H×W×3 uint8 → ((5, 2) landmarks, face size px) or None when no face is found.
LandmarkFinder = Callable[[np.ndarray], tuple[np.ndarray, float] | None]
FID_BATCH = 8


@dataclass
class Metrics:
    """The models the metrics need; a None field skips its metric, with the reason in `skipped`."""

    lpips: LPIPSMetric | None = None
    identity: IdentityEmbedder | None = None
    landmarks: LandmarkFinder | None = None
    fid: FIDInceptionV3 | None = None
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Result of a folder evaluation: per-image records, set-level numbers, unpaired files, errors."""

    images: list[dict] = field(default_factory=list)
    dataset: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sizes: dict[str, list[str]] = field(default_factory=dict)

    def means(self) -> dict[str, dict[str, float]]:
        """Mean, and number of images, of every per-image metric (finite values only; inf PSNR is counted in
        `infinite`)."""
        out: dict[str, dict[str, float]] = {}
        keys = sorted({k for rec in self.images for k, v in rec["metrics"].items() if isinstance(v, float)})
        for key in keys:
            values = [rec["metrics"][key] for rec in self.images if key in rec["metrics"]]
            finite = [v for v in values if math.isfinite(v)]
            out[key] = {"mean": float(np.mean(finite)) if finite else math.inf, "n": len(values),
                        "infinite": len(values) - len(finite)}
        return out


def image_files(folder: Path) -> dict[str, Path]:
    """stem → path for the image files directly in `folder` (sorted). A stem used twice (a.png and a.jpg)
    raises ValueError naming both."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_image_path(path):
            continue
        if path.stem in found:
            raise ValueError(f"{folder}: two images share the stem {path.stem!r} ({found[path.stem].name}, "
                             f"{path.name}); pairing by name is ambiguous")
        found[path.stem] = path
    return found


def pair_by_stem(restored: dict[str, Path], other: dict[str, Path] | None, label: str) -> list[str]:
    """Messages for stems present on one side only (`label` names the other folder)."""
    if other is None:
        return []
    msgs = [f"{restored[s].name}: no {label} image with this name" for s in sorted(set(restored) - set(other))]
    msgs += [f"{other[s].name}: {label} image has no restored image" for s in sorted(set(other) - set(restored))]
    return msgs


def load_rgb8(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB: alpha dropped, grey replicated, 16-bit rounded to 8-bit."""
    pic = read_image(path)
    if pic.bit_depth == 8 and pic.pixels.shape[2] >= 3:
        return np.ascontiguousarray(pic.pixels[:, :, :3])
    return np.rint(np.clip(rgb_float(pic), 0.0, 1.0) * 255.0).astype(np.uint8)


def _full_reference(restored: np.ndarray, reference: np.ndarray, metrics: Metrics, crop_border: int) -> dict:
    """PSNR/SSIM (RGB, Y), LPIPS, identity and landmark distance of one same-size pair."""
    out: dict[str, float | str] = {
        "psnr_rgb": psnr(restored, reference, crop_border=crop_border),
        "psnr_y": psnr(restored, reference, y_channel=True, crop_border=crop_border),
        "ssim_rgb": ssim(restored, reference, crop_border=crop_border),
        "ssim_y": ssim(restored, reference, y_channel=True, crop_border=crop_border),
    }
    if metrics.lpips is not None:
        out["lpips"] = metrics.lpips(restored, reference)
    if metrics.identity is not None:
        try:
            score = metrics.identity.compare(restored, reference)
            out["identity_cosine"], out["identity_l2"] = score.cosine, score.l2
        except NoFaceFound as exc:
            out["identity_note"] = _no_face_note("identity", exc.which, "reference")
    if metrics.landmarks is not None:
        found_r, found_ref = metrics.landmarks(restored), metrics.landmarks(reference)
        if found_r is None or found_ref is None:
            out["landmark_note"] = "no face found in the " + ("restored" if found_r is None else "reference")
        else:
            out["landmark_distance"] = landmark_distance(found_r[0], found_ref[0], found_ref[1])
    return out


def _evaluate_one(stem: str, restored_path: Path, reference_path: Path | None, lq_path: Path | None,
                  metrics: Metrics, crop_border: int, sizes: dict[str, set[str]]) -> dict:
    restored = load_rgb8(restored_path)
    sizes["restored"].add(f"{restored.shape[1]}x{restored.shape[0]}")
    record: dict = {"name": stem, "restored": str(restored_path), "metrics": {
        "sharpness": sharpness(restored), "noise_sigma": noise_sigma(restored)}}
    if reference_path is not None:
        record["reference"] = str(reference_path)
        reference = load_rgb8(reference_path)
        sizes["reference"].add(f"{reference.shape[1]}x{reference.shape[0]}")
        if reference.shape != restored.shape:
            record["note"] = (f"size differs from the reference ({restored.shape[1]}x{restored.shape[0]} vs "
                              f"{reference.shape[1]}x{reference.shape[0]}): no full-reference metrics")
        else:
            record["metrics"].update(_full_reference(restored, reference, metrics, crop_border))
    if lq_path is not None:
        record["lq"] = str(lq_path)
        lq = load_rgb8(lq_path)
        sizes["lq"].add(f"{lq.shape[1]}x{lq.shape[0]}")
        record["metrics"]["lq_sharpness"] = sharpness(lq)
        record["metrics"]["lq_noise_sigma"] = noise_sigma(lq)
        if metrics.identity is not None:
            try:
                score = metrics.identity.compare(restored, lq)
                record["metrics"]["identity_lq_cosine"] = score.cosine
                record["metrics"]["identity_lq_l2"] = score.l2
            except NoFaceFound as exc:
                record["metrics"]["identity_lq_note"] = _no_face_note("identity (lq)", exc.which, "lq")
    notes = [record["metrics"].pop(key) for key in ("landmark_note", "identity_note", "identity_lq_note")
             if key in record["metrics"]]
    if notes:
        record["note"] = "; ".join([record["note"], *notes] if "note" in record else notes)
    return record


def _no_face_note(metric: str, which: str, other: str) -> str:
    """"identity: no face found in the restored" for NoFaceFound("first"); `other` names the second image."""
    return f"{metric}: no face found in the {'restored' if which == 'first' else other}"


def fid_features(network: FIDInceptionV3, paths: Iterable[Path], errors: list[str]) -> np.ndarray:
    """(N, 2048) float64 pool3 features of the readable images among `paths` (unreadable ones go to
    `errors`), batched by size."""
    feats: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    device = next(network.parameters()).device

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
        with torch.no_grad():
            feats.append(network(x.to(device)).double().cpu().numpy())
        batch.clear()

    for path in paths:
        try:
            img = load_rgb8(path)
        except (ImageReadError, OSError, ValueError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        if batch and (img.shape != batch[0].shape or len(batch) == FID_BATCH):
            flush()
        batch.append(img)
    if batch:
        flush()
    return np.concatenate(feats) if feats else np.zeros((0, 2048))


def _fid(metrics: Metrics, restored: dict[str, Path], reference: dict[str, Path], result: Evaluation) -> None:
    if metrics.fid is None:
        return
    if min(len(restored), len(reference)) < 2:
        metrics.skipped["fid"] = "needs at least 2 restored and 2 reference images"
        return
    f_restored = fid_features(metrics.fid, restored.values(), result.errors)
    f_reference = fid_features(metrics.fid, reference.values(), result.errors)
    if min(len(f_restored), len(f_reference)) < 2:
        metrics.skipped["fid"] = "fewer than 2 readable images on one side"
        return
    result.dataset["fid"] = frechet_distance_of_features(f_restored, f_reference)
    result.dataset["fid_n_restored"] = float(len(f_restored))
    result.dataset["fid_n_reference"] = float(len(f_reference))


def evaluate_folders(restored_dir: Path, reference_dir: Path | None, lq_dir: Path | None, metrics: Metrics,
                     crop_border: int = 0, progress: Callable[[Iterable], Iterable] | None = None) -> Evaluation:
    """Evaluate every image of `restored_dir` (see the module docstring). `progress` wraps the pair iterator
    (e.g. tqdm). Unreadable files and unpaired names are recorded in the result, not raised."""
    result = Evaluation()
    restored = image_files(restored_dir)
    reference = image_files(reference_dir) if reference_dir is not None else None
    lq = image_files(lq_dir) if lq_dir is not None else None
    result.missing = pair_by_stem(restored, reference, "reference") + pair_by_stem(restored, lq, "lq")
    sizes: dict[str, set[str]] = {"restored": set(), "reference": set(), "lq": set()}
    stems = sorted(restored)
    for stem in progress(stems) if progress is not None else stems:
        ref_path = reference.get(stem) if reference is not None else None
        lq_path = lq.get(stem) if lq is not None else None
        try:
            result.images.append(_evaluate_one(stem, restored[stem], ref_path, lq_path, metrics, crop_border, sizes))
        except (ImageReadError, OSError, ValueError, RuntimeError) as exc:
            reason = " ".join(str(exc).split())
            log.warning("%s: %s", stem, reason)
            result.errors.append(f"{stem}: {reason}")
    if reference is not None:
        _fid(metrics, restored, reference, result)
    result.sizes = {k: sorted(v) for k, v in sizes.items() if v}
    return result
