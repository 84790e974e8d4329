"""RetinaFace-R50 as a face detector: loading the released file, priors, decoding, selection and NMS.

Two entry points share one network:

- `RetinaFaceDetector.detect` implements the `FaceDetector` protocol for our pipeline: RGB in, `Face` records
  in input pixels, the true face probability as score and a correct eye-distance filter.
- `RetinaFaceDetector.official_landmarks_5` reproduces the official `FaceRestoreHelper.get_face_landmarks_5`
  (sczhou/CodeFormer facelib, resize=640) with its quirks, for the `official` profile.

The numbers follow the official `detect_faces`: BGR float32 minus (104, 117, 123) with no scaling, priors
(cx, cy, w, h) relative to the input size, variances (0.1, 0.2), decoding in float32, score > 0.8 (strict),
then NMS at IoU 0.4 with torchvision's CPU rule. Boxes are not clipped to the image.
"""

from __future__ import annotations

import logging
import math
import os

import cv2
import numpy as np
import torch

from codeformer.checkpoint import CheckpointError, read_state_dict
from codeformer.face.detection import DETECT_MAX_LONG_SIDE, DETECT_SHORT_SIDE, MIN_EYE_DISTANCE, Face, resize_short_side
from codeformer.models.retinaface import RetinaFace
from codeformer.weights import describe, resolve

log = logging.getLogger(__name__)

WEIGHTS_NAME = "detection_Resnet50_Final.pth"
BGR_MEAN = (104.0, 117.0, 123.0)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor sides in px at each level
VARIANCES = (0.1, 0.2)
CONF_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4
_MAX_LISTED = 3


# --- weights ---------------------------------------------------------------------------------------------------


def _key_problem(model: RetinaFace, sd: dict[str, torch.Tensor]) -> str:
    """Empty when `sd` fits the model (a missing `num_batches_tracked` counter is allowed); otherwise a one-line
    account of the missing, unexpected and wrong-shape keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f", … {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            parts.append(f"{len(items)} {title} ({', '.join(items[:_MAX_LISTED])}{more})")
    return "; ".join(parts)


def retinaface_from_state_dict(sd: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> RetinaFace:
    """A RetinaFace-R50 in eval mode holding `sd` (names without `module.`). The BatchNorm counters
    `num_batches_tracked` may be absent: they never change eval outputs. Any other mismatch raises a one-line
    `CheckpointError` naming `source`."""
    model = RetinaFace()
    problem = _key_problem(model, sd)
    if problem:
        raise CheckpointError(f"{source}: not a RetinaFace-R50 checkpoint: {problem}")
    full = dict(sd)
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in full:
            full[name] = value
    model.load_state_dict(full, strict=True)
    return model.eval()


def load_retinaface(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
                    ) -> RetinaFaceDetector:
    """The RetinaFace-R50 detector from `path`, or from `detection_Resnet50_Final.pth` through the weights table
    (cache, then download; offline, a missing file raises `WeightsError` saying where to put it). The file is
    read with `weights_only=True` and a DataParallel `module.` prefix is removed."""
    file = resolve(WEIGHTS_NAME, path)
    if path is None:
        log.info("%s", describe(WEIGHTS_NAME))
    model = retinaface_from_state_dict(read_state_dict(file), file)
    return RetinaFaceDetector(model, device)


# --- priors, decoding, NMS -------------------------------------------------------------------------------------


def feature_map_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(rows, cols) of the stride 8, 16 and 32 maps for an input of `height`×`width` (what the ResNet makes)."""
    return [(math.ceil(height / step), math.ceil(width / step)) for step in STEPS]


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (N, 4) float32 as (cx, cy, w, h), relative to the input: x and w divide by the width, y and h by
    the height. Order: level, row, column, then the level's two sizes. Computed in float64 and stored as
    float32, as the official Python-float code is."""
    levels = []
    for (rows, cols), step, sizes in zip(feature_map_sizes(height, width), STEPS, MIN_SIZES, strict=True):
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        level = np.empty((rows, cols, len(sizes), 4), dtype=np.float64)
        level[..., 0] = cx[None, :, None]
        level[..., 1] = cy[:, None, None]
        level[..., 2] = np.array(sizes, dtype=np.float64) / width
        level[..., 3] = np.array(sizes, dtype=np.float64) / height
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Box offsets (N, 4) → corners (x1, y1, x2, y2) in input pixels, float32, in the official order of
    operations (centre, size, then corners from the centre, then ×(W, H, W, H))."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    top_left = centre - size / 2
    corners = torch.cat([top_left, top_left + size], dim=1)
    return corners * torch.tensor([width, height, width, height], dtype=torch.float32, device=loc.device)


def decode_landmarks(landms: torch.Tensor, priors: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Landmark offsets (N, 10) → five (x, y) points (N, 10) in input pixels, float32."""
    points = [priors[:, :2] + landms[:, 2 * k:2 * k + 2] * VARIANCES[0] * priors[:, 2:] for k in range(5)]
    scale = torch.tensor([width, height] * 5, dtype=torch.float32, device=landms.device)
    return torch.cat(points, dim=1) * scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first, with torchvision.ops.nms's CPU rule: float32
    boxes, area (x2−x1)(y2−y1) with no +1, a stable descending sort, and a box dropped when its IoU with a kept
    box is > `iou_threshold` (compared in float64, as the threshold is a double there)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    zero = np.float32(0)
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1:]
        inter_w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        inter_h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = inter_w * inter_h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def select_detections(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, conf_threshold: float,
                      nms_threshold: float) -> np.ndarray:
    """The official selection: score > `conf_threshold` (strict), descending score, NMS. Inputs are per anchor
    (N, 4), (N,), (N, 10) float32; returns (n, 15) float32 rows [x1, y1, x2, y2, score, 10 landmark coords]."""
    candidates = np.where(scores > conf_threshold)[0]
    candidates = candidates[scores[candidates].argsort()[::-1]]  # numpy's argsort reversed, as the official code
    rows = np.hstack([boxes[candidates], scores[candidates, None]]).astype(np.float32, copy=False)
    keep = nms(rows[:, :4], rows[:, 4], nms_threshold)
    return np.concatenate([rows[keep], landmarks[candidates][keep]], axis=1).astype(np.float32, copy=False)


# --- the detector ----------------------------------------------------------------------------------------------


def _as_bgr_u8(image: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"RetinaFace needs an H×W×3 uint8 {what} image, got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"RetinaFace needs a non-empty image, got shape {image.shape}")
    return image


class RetinaFaceDetector:
    """RetinaFace-R50 on `device` in eval mode, fp32, without gradients. See the module docstring."""

    def __init__(self, model: RetinaFace, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.mean = torch.tensor(BGR_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def forward_raw(self, bgr_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network on an H×W×3 uint8 BGR image, as float32 BGR minus (104, 117, 123) (no scaling, no resize).
        Returns numpy float32 loc (1, N, 4), conf (1, N, 2) softmaxed, landms (1, N, 10)."""
        loc, conf, landms = self._forward(bgr_u8)
        return loc.cpu().numpy(), conf.cpu().numpy(), landms.cpu().numpy()

    def _forward(self, bgr_u8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bgr_u8 = _as_bgr_u8(bgr_u8, "BGR")
        x = torch.from_numpy(np.ascontiguousarray(bgr_u8).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            return self.model(x.to(self.device) - self.mean)

    def decode_all(self, bgr_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every anchor decoded: boxes (N, 4), face scores (N,), landmarks (N, 10), float32 in input pixels."""
        h, w = bgr_u8.shape[:2]
        loc, conf, landms = self._forward(bgr_u8)
        priors = torch.from_numpy(prior_boxes(h, w)).to(self.device)
        with torch.no_grad():
            boxes = decode_boxes(loc[0], priors, h, w)
            points = decode_landmarks(landms[0], priors, h, w)
        return boxes.cpu().numpy(), conf[0, :, 1].cpu().numpy(), points.cpu().numpy()

    def detect_raw(self, bgr_u8: np.ndarray, conf_threshold: float = CONF_THRESHOLD,
                   nms_threshold: float = NMS_THRESHOLD) -> np.ndarray:
        """Faces in an H×W×3 uint8 BGR image at its own size (the official `detect_faces` with
        use_origin_size=True): (n, 15) float32 rows [x1, y1, x2, y2, score, l0x, l0y, …, l4x, l4y] in the
        image's pixels, best score first."""
        boxes, scores, points = self.decode_all(bgr_u8)
        return select_detections(boxes, scores, points, conf_threshold, nms_threshold)

    def official_landmarks_5(self, bgr_u8_photo: np.ndarray, resize: int | None = 640,
                             eye_dist_threshold: float | None = 5, only_center_face: bool = False
                             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The official `get_face_landmarks_5(resize, eye_dist_threshold, only_center_face)` on the photo as
        the helper's `read_image` left it (BGR uint8; enlarging a photo under 512 px is the caller's step).

        Returns (det_faces (n, 15) float32, [landmarks5 (5, 2) float32 per face]) in the photo's pixels, in
        detection order. The official helper keeps only the first five columns of each row
        (`det_faces[:, :5]` equals its `det_faces`); the landmarks are columns 5–14. The quirks are kept on
        purpose; see the comments.
        """
        photo = _as_bgr_u8(bgr_u8_photo, "BGR")
        h, w = photo.shape[:2]
        if resize is None:
            scale = 1.0
            small = photo
        else:
            scale = resize / min(h, w)
            # Quirk: the new size is truncated with int(), not rounded, and cv2.resize then stretches each axis
            # by its own factor while the coordinates below are divided by the one `scale`.
            size = (int(w * scale), int(h * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            small = cv2.resize(photo, size, interpolation=interpolation)
        rows = self.detect_raw(small)
        # Quirk: the whole 15-column row is divided by the scale, the score included, so det_faces[:, 4] is the
        # probability / scale (0.8 at 640/512 = 1.25 prints as 0.64). numpy 2 divides float32 by a Python float
        # in float32, hence the explicit float32 scale.
        rows = (rows / np.float32(scale)).astype(np.float32, copy=False)
        kept = []
        for index, row in enumerate(rows):
            # Quirk: the "eye distance" is the norm of (left-eye y − right-eye y, right-eye x − nose x), columns
            # 6−8 and 7−9, not the distance between the eyes (columns 5–8); a true eye distance keeps other faces.
            eye_dist = np.linalg.norm(np.array([row[6] - row[8], row[7] - row[9]], dtype=np.float32))
            if eye_dist_threshold is not None and eye_dist < eye_dist_threshold:
                continue
            kept.append(index)
        det_faces = rows[kept]
        landmarks = [row[5:15].reshape(5, 2).copy() for row in det_faces]
        if only_center_face and len(det_faces):
            # The face whose box centre is nearest (w/2, h/2) of the photo (not the detector input); the first
            # one wins a tie.
            centre = np.array([w / 2, h / 2])
            distances = [float(np.linalg.norm(np.array([(r[0] + r[2]) / 2, (r[1] + r[3]) / 2]) - centre))
                         for r in det_faces]
            best = distances.index(min(distances))
            det_faces, landmarks = det_faces[best:best + 1], [landmarks[best]]
        return det_faces, landmarks

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        """Faces in an H×W×3 (or H×W grey, or RGBA) uint8 RGB image: `Face` records in its pixels, best score
        first, the score being the face probability, landmarks in the template order, faces whose eyes are
        closer than 5 px dropped. Detection runs on a copy with a 640-px short side (long side at most 4096).
        `min_face` is not used: RetinaFace's smallest anchor (16 px at that size) is fixed."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        bgr = np.ascontiguousarray(rgb[:, :, 2::-1]) if rgb.ndim == 3 and rgb.shape[2] >= 3 else rgb
        bgr = _as_bgr_u8(bgr, "RGB")
        h, w = bgr.shape[:2]
        small, _ = resize_short_side(bgr, DETECT_SHORT_SIDE, DETECT_MAX_LONG_SIDE)
        # each axis has its own factor: the resized size is rounded per axis
        sx, sy = small.shape[1] / w, small.shape[0] / h
        faces = []
        for row in self.detect_raw(small).astype(np.float64):
            box = (row[0] / sx, row[1] / sy, row[2] / sx, row[3] / sy)
            landmarks5 = row[5:15].reshape(5, 2) / np.array([sx, sy])
            face = Face(box=tuple(float(v) for v in box), score=float(row[4]), landmarks5=landmarks5)
            if face.eye_distance < MIN_EYE_DISTANCE:
                log.debug("face %s dropped: eye distance %.1f px", face.box, face.eye_distance)
                continue
            faces.append(face)
        return faces


__all__ = ["RetinaFaceDetector", "decode_boxes", "decode_landmarks", "load_retinaface", "nms", "prior_boxes",
           "retinaface_from_state_dict", "select_detections"]
