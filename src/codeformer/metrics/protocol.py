"""The evaluation protocol (what exactly was measured) and the `metrics.json` / `metrics.md` writers.

Two runs are comparable when their protocol blocks agree: same pairing, colour space, crop, image sizes,
reference set, and weight files (name and SHA-256).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from codeformer.atomic import write_text
from codeformer.metrics.evaluate import Evaluation

__all__ = ["build_protocol", "to_markdown", "write_outputs"]

DEFINITIONS = {
    "images": "read as 8-bit RGB (alpha dropped, grey replicated, 16-bit rounded to 8-bit); whole images, no face "
              "crop and no resizing; full-reference metrics need equal sizes",
    "pairing": "by file stem (name without extension) across --restored, --reference and --lq",
    "psnr": "10·log10(255²/MSE) over all pixels and channels, float64; inf for identical images",
    "ssim": "Wang et al. 2004, 11×11 Gaussian window σ=1.5, K1=0.01, K2=0.03, population covariance, mean over "
            "pixels ≥5 px from the border and over channels (= scikit-image structural_similarity with "
            "gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)",
    "y_channel": "BT.601 luma as BasicSR bgr2ycbcr(y_only=True)×255: 16 + 65.481R + 128.553G + 24.966B "
                 "(R,G,B in [0,1]), range 16–235, not rounded",
    "lpips": "LPIPS v0.1 VGG (torchvision vgg16-397923af.pth backbone + lpips_vgg_v0.1.pth heads), inputs scaled "
             "to [-1, 1], whole image, lower is closer",
    "identity": "dlib ResNet 128-d embedding (dlib_face_recognition_resnet_model_v1.dat) of the best-scoring HOG "
                "face (5-point landmarks, dlib chip 150 px, padding 0.25); cosine similarity (higher = closer) "
                "and L2 distance (lower = closer; dlib's same-person threshold 0.6)",
    "landmark_distance": "mean distance of the 5 FFHQ points (dlib 68-point landmarks reduced) between restored "
                         "and reference, divided by the reference face box side",
    "fid": "pytorch-fid InceptionV3 pool3 (2048-d), input resized to 299×299 bilinear, restored set vs the "
           "whole reference folder, Fréchet distance of the two Gaussians (unbiased covariances)",
    "sharpness": "no-reference: variance of the 4-neighbour Laplacian of the BT.601 luma (0–255) minus 20·σ²",
    "noise_sigma": "no-reference: Immerkær's noise σ of the BT.601 luma (0–255)",
}


def build_protocol(restored: Path, reference: Path | None, lq: Path | None, crop_border: int,
                   evaluation: Evaluation, weights: dict[str, dict[str, str]], skipped: dict[str, str]) -> dict:
    """The protocol block: folders, sizes found, crop, definitions, weight files with hashes, skipped metrics."""
    return {
        "tool": "codeformer evaluate",
        "restored": str(restored),
        "reference": str(reference) if reference is not None else None,
        "lq": str(lq) if lq is not None else None,
        "crop_border": crop_border,
        "sizes": evaluation.sizes,
        "colour_space": "RGB (sRGB values as stored; no ICC conversion); Y metrics on BT.601 luma",
        "definitions": DEFINITIONS,
        "weights": weights,
        "skipped": skipped,
    }


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _json_safe(obj: object) -> object:
    """inf/nan floats → strings ("inf", "nan"), so the JSON file stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def to_markdown(protocol: dict, evaluation: Evaluation) -> str:
    """A markdown page: protocol, summary table (mean, n), per-image table, missing pairs and errors."""
    lines = ["# Evaluation", "", "## Protocol", ""]
    for key in ("restored", "reference", "lq", "crop_border", "sizes", "colour_space"):
        lines.append(f"- **{key}**: {protocol[key]}")
    for key, text in protocol["definitions"].items():
        lines.append(f"- **{key}**: {text}")
    for name, info in protocol["weights"].items():
        lines.append(f"- **weights** `{name}`: sha256 `{info['sha256']}`")
    for name, why in protocol["skipped"].items():
        lines.append(f"- **skipped** {name}: {why}")
    means = evaluation.means()
    lines += ["", "## Summary", "", "| metric | mean | n |", "|---|---:|---:|"]
    for key, m in means.items():
        inf_note = f" ({int(m['infinite'])} inf)" if m["infinite"] else ""
        lines.append(f"| {key} | {_fmt(m['mean'])}{inf_note} | {int(m['n'])} |")
    for key, value in evaluation.dataset.items():
        lines.append(f"| {key} | {_fmt(value)} | |")
    keys = list(means)
    if evaluation.images:
        lines += ["", "## Per image", "", "| image | " + " | ".join(keys) + " | note |",
                  "|---|" + "---:|" * len(keys) + "---|"]
        for rec in evaluation.images:
            cells = [_fmt(rec["metrics"][k]) if k in rec["metrics"] else "" for k in keys]
            lines.append(f"| {rec['name']} | " + " | ".join(cells) + f" | {rec.get('note', '')} |")
    for title, items in (("Missing pairs", evaluation.missing), ("Errors", evaluation.errors)):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"


def write_outputs(outdir: Path, protocol: dict, evaluation: Evaluation) -> tuple[Path, Path]:
    """Write `metrics.json` and `metrics.md` into `outdir` (created); returns both paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    record = {"protocol": protocol, "summary": evaluation.means(), "dataset": evaluation.dataset,
              "images": evaluation.images, "missing": evaluation.missing, "errors": evaluation.errors}
    json_path, md_path = outdir / "metrics.json", outdir / "metrics.md"
    write_text(json_path, json.dumps(_json_safe(record), indent=2, ensure_ascii=False) + "\n")
    write_text(md_path, to_markdown(protocol, evaluation))
    return json_path, md_path
