"""Per-face quality and identity report for `codeformer restore --report`.

For each restored face (`FaceResult`):
- where and how sure: box, which detector found it and its score, face size (input px);
- how degraded the input was: sharpness and noise σ of the aligned input crop (`metrics.noref`), the three
  `-w auto` factors and the w that rule would pick, next to the w actually used;
- identity kept: dlib embedding of the input crop vs the restored crop (cosine, L2; dlib's same-person
  threshold is L2 < 0.6). Both crops are aligned the same way, so the same face box is used for both;
- consistency: the restored crop is blurred until its sharpness matches the input's (`match_sharpness`), then
  compared with the input: PSNR on the BT.601 Y channel after a light σ = 1 px low-pass of both (which discounts
  the input's pixel noise). A restoration that only sharpened what was there degrades back close to its input
  (high PSNR); one that invented or changed structure (eyes, teeth, wrinkles, a different face) does not.

Flags: `small_face` (face size below `min_face`), `identity_changed` (L2 above `max_identity_l2`),
`invented_detail` (consistency PSNR below `min_consistency_psnr`). The thresholds are heuristics, stated in the
report next to the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from codeformer.face.autow import measure, w_from_degradation
from codeformer.face.pipeline import FaceResult, RestoreResult
from codeformer.metrics.fidelity import psnr
from codeformer.metrics.identity import ALIGNED_FACE_BOX_512, IdentityEmbedder
from codeformer.metrics.noref import gaussian_blur, match_sharpness, sharpness

__all__ = ["ReportThresholds", "consistency", "flag_summary", "report_face", "report_faces", "thresholds_record"]

COMPARE_LOWPASS_SIGMA = 1.0


@dataclass(frozen=True)
class ReportThresholds:
    """min_face: px; max_identity_l2: dlib L2 distance; min_consistency_psnr: dB (Y channel)."""

    min_face: float = 64.0
    max_identity_l2: float = 0.6
    min_consistency_psnr: float = 35.0


def consistency(input_crop: np.ndarray, restored_crop: np.ndarray) -> dict[str, float]:
    """Degrade the restored crop back to the input's sharpness and compare (see the module docstring).
    Both H×W×3 uint8 RGB, same shape. Returns {"blur_sigma": Gaussian σ applied (px), "psnr_y": dB after the
    match, "psnr_y_raw": dB before it}."""
    if input_crop.shape != restored_crop.shape:
        raise ValueError(f"crop shapes differ: {input_crop.shape} vs {restored_crop.shape}")
    restored = restored_crop.astype(np.float32) / 255.0
    inp = input_crop.astype(np.float32) / 255.0
    sigma = match_sharpness(restored, sharpness(inp))
    degraded = gaussian_blur(restored, sigma)
    low = COMPARE_LOWPASS_SIGMA
    return {
        "blur_sigma": round(sigma, 3),
        "psnr_y": round(psnr(gaussian_blur(degraded, low), gaussian_blur(inp, low), y_channel=True), 3),
        "psnr_y_raw": round(psnr(restored, inp, y_channel=True), 3),
    }


def _aligned_box(crop: np.ndarray) -> tuple[float, float, float, float]:
    """The dlib face box of an aligned crop of any size (the 512 box scaled)."""
    s = crop.shape[1] / 512.0, crop.shape[0] / 512.0
    x0, y0, x1, y1 = ALIGNED_FACE_BOX_512
    return x0 * s[0], y0 * s[1], x1 * s[0], y1 * s[1]


def report_face(face: FaceResult, embedder: IdentityEmbedder | None = None,
                thresholds: ReportThresholds | None = None) -> dict:
    """The JSON-able report of one face (see the module docstring). Without an embedder the identity entry is
    None and never flagged."""
    limits = thresholds or ReportThresholds()
    degradation = measure(face.cropped, face.face_size, face.affine)
    record: dict = {
        "box": [round(float(v), 2) for v in face.box],
        "score": round(float(face.score), 4),
        "detector": face.detector,
        "face_size": round(float(face.face_size), 2),
        "input_sharpness": round(degradation.sharpness, 3),
        "input_noise_sigma": round(degradation.noise_sigma, 3),
        "w": float(face.w),
        "w_auto": w_from_degradation(degradation),
        "w_auto_factors": {k: round(v, 3) for k, v in degradation.factors.items()},
        "identity": None,
        "consistency": consistency(face.cropped, face.restored),
    }
    if embedder is not None:
        box = _aligned_box(face.cropped)
        score = embedder.compare(face.cropped, face.restored, box, box)
        record["identity"] = {"cosine": round(score.cosine, 4), "l2": round(score.l2, 4)}
    flags = []
    if face.face_size < limits.min_face:
        flags.append("small_face")
    if record["identity"] is not None and record["identity"]["l2"] > limits.max_identity_l2:
        flags.append("identity_changed")
    if record["consistency"]["psnr_y"] < limits.min_consistency_psnr:
        flags.append("invented_detail")
    record["flags"] = flags
    return record


def report_faces(result: RestoreResult, embedder: IdentityEmbedder | None = None,
                 thresholds: ReportThresholds | None = None) -> list[dict]:
    """One `report_face` record per face of `result`, each with its index."""
    return [{"index": i, **report_face(face, embedder, thresholds)} for i, face in enumerate(result.faces)]


def thresholds_record(thresholds: ReportThresholds) -> dict[str, float]:
    """The thresholds as a JSON-able dict (written into every report)."""
    return asdict(thresholds)


def flag_summary(reports: list[list[dict]]) -> str:
    """One line: faces reported and how many carry each flag, e.g. "report: 5 face(s); flagged: 1 small_face"."""
    faces = [face for image in reports for face in image]
    counts: dict[str, int] = {}
    for face in faces:
        for flag in face["flags"]:
            counts[flag] = counts.get(flag, 0) + 1
    flagged = ", ".join(f"{n} {flag}" for flag, n in sorted(counts.items())) or "none"
    return f"report: {len(faces)} face(s); flagged: {flagged}"
