"""`codeformer evaluate` as a library call: build the metric models (resolve weight files, record their hashes,
skip what is unavailable with the reason instead of failing), evaluate, write the outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from codeformer import weights
from codeformer.dlib_models import DlibFaceModels, landmarks68_to_5
from codeformer.metrics.evaluate import Evaluation, Metrics, evaluate_folders
from codeformer.metrics.fid import FIDInceptionV3
from codeformer.metrics.fidelity import LPIPSMetric
from codeformer.metrics.identity import IdentityEmbedder
from codeformer.metrics.protocol import build_protocol, write_outputs

__all__ = ["DlibLandmarks", "build_metrics", "run_evaluation", "summary_line"]

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
VGG_WEIGHTS = "vgg16-397923af.pth"
LPIPS_WEIGHTS = "lpips_vgg_v0.1.pth"


class DlibLandmarks:
    """Landmark finder for the landmark distance: H×W×3 uint8 RGB → ((5, 2) FFHQ points, face box side px) of the
    best-scoring dlib HOG face on a copy with a 640 px short side (68 points reduced to five), or None.

    It uses dlib directly (`codeformer.dlib_models`), not `codeformer.face`, so `metrics` does not depend on
    `face`; the points are those `face.detection.DlibDetector` gives."""

    short_side = 640

    def __init__(self, models: DlibFaceModels | None = None) -> None:
        self.models = models or DlibFaceModels()

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        img = np.ascontiguousarray(rgb[:, :, :3])
        h, w = img.shape[:2]
        scale = self.short_side / min(h, w)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        found = self.models.hog(img, 0, 0.0)
        if not found:
            return None
        box, _ = max(found, key=lambda f: f[1])
        points = (landmarks68_to_5(self.models.landmarks68(img, box)) + 0.5) / scale - 0.5
        return points, max(box[2] - box[0] + 1, box[3] - box[1] + 1) / scale


def _record(used: dict[str, dict[str, str]], name: str, path: Path) -> None:
    used[name] = {"path": str(path), "sha256": weights.file_sha256(path)}


def build_metrics(lpips: bool = True, identity: bool = True, fid: bool = True, vgg_path: str | None = None,
                  lpips_path: str | None = None, fid_path: str | None = None, progress: bool = True,
                  device: str = "cpu") -> tuple[Metrics, dict[str, dict[str, str]]]:
    """Metrics with the requested models loaded, and {file name: {path, sha256}} of every weight file used.
    A weight file that cannot be resolved (offline, missing) skips its metric; `Metrics.skipped` says why.
    device: where the LPIPS and FID networks run (the identity metric is dlib's, on the CPU)."""
    metrics = Metrics()
    used: dict[str, dict[str, str]] = {}
    if lpips:
        try:
            vgg = weights.resolve(VGG_WEIGHTS, path=vgg_path, progress=progress)
            lin = weights.resolve(LPIPS_WEIGHTS, path=lpips_path, progress=progress)
            metrics.lpips = LPIPSMetric.from_files(vgg, lin, device)
            _record(used, VGG_WEIGHTS, vgg)
            _record(used, LPIPS_WEIGHTS, lin)
        except (weights.WeightsError, OSError, RuntimeError, KeyError) as exc:
            metrics.skipped["lpips"] = " ".join(str(exc).split()) + " (evaluate: --vgg-weights, --lpips-weights)"
    else:
        metrics.skipped["lpips"] = "not requested (--no-lpips)"
    if identity:
        try:
            metrics.identity = IdentityEmbedder.load()
            for name, path in IdentityEmbedder.model_files().items():
                _record(used, name, Path(path))
            metrics.landmarks = DlibLandmarks()
        except (FileNotFoundError, ImportError, RuntimeError) as exc:
            metrics.skipped["identity"] = " ".join(str(exc).split())
    else:
        metrics.skipped["identity"] = "not requested (--no-identity)"
    if fid:
        try:
            path = weights.resolve(FID_WEIGHTS, path=fid_path, progress=progress)
            metrics.fid = FIDInceptionV3.from_file(path).to(device)
            _record(used, FID_WEIGHTS, path)
        except (weights.WeightsError, OSError, RuntimeError, KeyError) as exc:
            metrics.skipped["fid"] = " ".join(str(exc).split()) + " (evaluate: --fid-weights)"
    else:
        metrics.skipped["fid"] = "not requested (--no-fid)"
    return metrics, used


def run_evaluation(restored: Path, reference: Path | None, lq: Path | None, outdir: Path, crop_border: int = 0,
                   metrics: Metrics | None = None, used_weights: dict[str, dict[str, str]] | None = None,
                   progress: bool = True) -> tuple[Evaluation, Path, Path]:
    """Evaluate the folders with `metrics` (default: `build_metrics()`), write `metrics.json` and `metrics.md`
    into `outdir`; returns the evaluation and both paths. A tqdm bar on stderr when `progress`."""
    for label, folder in (("restored", restored), ("reference", reference), ("lq", lq)):
        if folder is not None and not folder.is_dir():
            raise NotADirectoryError(f"--{label} {folder}: not a folder")
    if metrics is None:
        metrics, used_weights = build_metrics(progress=progress)
    bar = (lambda items: tqdm(items, unit="img", file=sys.stderr, desc="evaluate")) if progress else None
    evaluation = evaluate_folders(restored, reference, lq, metrics, crop_border=crop_border, progress=bar)
    protocol = build_protocol(restored, reference, lq, crop_border, evaluation, used_weights or {},
                              dict(metrics.skipped))
    json_path, md_path = write_outputs(outdir, protocol, evaluation)
    return evaluation, json_path, md_path


def summary_line(evaluation: Evaluation) -> str:
    """One line for the end of a run: images evaluated, missing pairs, errors, and the main means."""
    means = evaluation.means()
    parts = [f"{len(evaluation.images)} image(s) evaluated, {len(evaluation.missing)} missing pair(s), "
             f"{len(evaluation.errors)} error(s)"]
    for key in ("psnr_y", "ssim_y", "lpips", "identity_l2", "identity_lq_l2"):
        if key in means:
            parts.append(f"{key} {means[key]['mean']:.4f}")
    if "fid" in evaluation.dataset:
        parts.append(f"fid {evaluation.dataset['fid']:.2f}")
    return "; ".join(parts)
