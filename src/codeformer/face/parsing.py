"""Face parsing for the paste mask: load ParseNet, label the pixels of restored faces, build the official mask.

The official helper (facelib `FaceRestoreHelper.paste_faces_to_input_image` with `use_parse=True`) runs ParseNet on
each restored face and keeps face and hair: of the 19 classes, 0, 14, 16, 17 and 18 (background, neck, cloth, hat
and ear-ring in the CelebAMask-HQ order; the official code lists them by index only) become 0, every other class
255. That map is blurred twice with a 101×101 Gaussian of sigma 11, a 10-px border is zeroed and it is divided by
255. `parse_mask` does exactly that; `parse` runs the network on a batch of faces in one forward pass.

Faces are RGB uint8 (H, W, 3), any size (resized to the network's 512 with bilinear interpolation, as the official
helper does). The official code receives BGR and converts it; a caller holding BGR passes `face[..., ::-1]`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from codeformer import weights
from codeformer.checkpoint import load_state_dict_strict, read_state_dict
from codeformer.models.parsenet import ParseNet

PARSENET_FILE = "parsing_parsenet.pth"
PARSENET_ENV = "CODEFORMER_PARSENET"
MASK_ZERO_CLASSES = (0, 14, 16, 17, 18)  # the official MASK_COLORMAP's zeros; all other classes are 255
MASK_BLUR_KSIZE = 101
MASK_BLUR_SIGMA = 11.0
MASK_BORDER = 10  # px zeroed on each side of the blurred 512 mask
DEFAULT_BATCH = 4  # faces per forward pass: measured peak RSS 1.0 GB at batch 1, 2.6 GB at batch 4 (CPU)


def load_parsenet(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
                  offline: bool | None = None, progress: bool = True) -> ParseNet:
    """ParseNet(512, 512, 19) from `parsing_parsenet.pth` in eval mode on `device`.

    The file is found through `codeformer.weights.resolve`: `path`, else `$CODEFORMER_PARSENET`, else the cache,
    else a download (never in offline mode: a missing file then raises `WeightsError` naming where to put it).
    It is read with `weights_only=True` and loaded strictly; `num_batches_tracked` counters, which never change an
    eval output, are accepted when absent.
    """
    file = weights.resolve(PARSENET_FILE, path=path, env_var=PARSENET_ENV, offline=offline, progress=progress)
    sd = read_state_dict(file)
    net = ParseNet()
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    load_state_dict_strict(net, sd, file)
    return net.eval().to(device)


def _as_list(faces: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(faces, np.ndarray) and faces.ndim == 3:
        faces = [faces]
    out = list(faces)
    for i, f in enumerate(out):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"face {i}: expected an RGB uint8 (H, W, 3) array, got {f.dtype} {f.shape}")
    return out


def preprocess(faces: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 faces → (N, 3, size, size) float32 in [-1, 1]: bilinear resize (cv2 INTER_LINEAR, skipped at
    `size`), / 255 in float32, then (x − 0.5) / 0.5 — the official helper's steps."""
    batch = np.empty((len(faces), size, size, 3), np.float32)
    for i, face in enumerate(faces):
        if face.shape[:2] != (size, size):
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
        batch[i] = face.astype(np.float32) / np.float32(255.0)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    return ((x - 0.5) / 0.5).contiguous()


def _logit_chunks(net: ParseNet, faces: np.ndarray | Sequence[np.ndarray], batch_size: int):
    """Yield (start, logits (n, 19, out, out)) for consecutive chunks of at most `batch_size` faces."""
    items = _as_list(faces)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(net.parameters()).device
    for start in range(0, len(items), batch_size):
        x = preprocess(items[start:start + batch_size], net.in_size).to(device)
        yield start, net(x)[0]


@torch.inference_mode()
def parse_logits(net: ParseNet, faces: np.ndarray | Sequence[np.ndarray],
                 batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Class logits (N, 19, 512, 512) float32 on the CPU for RGB uint8 faces (one (H, W, 3) array, an
    (N, H, W, 3) array or a list), `batch_size` faces per forward pass."""
    return torch.cat([logits.float().cpu() for _, logits in _logit_chunks(net, faces, batch_size)])


@torch.inference_mode()
def parse(net: ParseNet, faces: np.ndarray | Sequence[np.ndarray], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Per-pixel class labels (N, 512, 512) uint8 (the argmax over the 19 logits) for RGB uint8 faces,
    `batch_size` faces per forward pass (eval-mode BatchNorm makes the result independent of the batching)."""
    n = 1 if isinstance(faces, np.ndarray) and faces.ndim == 3 else len(faces)
    out = np.empty((n, net.out_size, net.out_size), np.uint8)
    for start, logits in _logit_chunks(net, faces, batch_size):
        out[start:start + len(logits)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return out


def parse_mask(labels: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """The official paste mask from ParseNet labels: (H, W) or (N, H, W) integer labels → mask in [0, 1] of the
    same shape. Face and hair classes are 255, the rest 0 (in float64), blurred twice with
    `cv2.GaussianBlur((101, 101), 11)` (reflect-101 border), a 10-px border set to 0, divided by 255.

    The mask is computed in float64 like the official code and returned as `dtype`: float32 by default; pass
    `np.float64` to carry on exactly as the official helper does (it resizes and warps this float64 mask).
    """
    labels = np.asarray(labels)
    if labels.ndim == 3:
        return np.stack([parse_mask(one, dtype) for one in labels])
    if labels.ndim != 2:
        raise ValueError(f"expected (H, W) or (N, H, W) labels, got shape {labels.shape}")
    mask = np.where(np.isin(labels, MASK_ZERO_CLASSES), 0.0, 255.0)
    for _ in range(2):
        mask = cv2.GaussianBlur(mask, (MASK_BLUR_KSIZE, MASK_BLUR_KSIZE), MASK_BLUR_SIGMA)
    b = MASK_BORDER
    mask[:b, :] = 0
    mask[-b:, :] = 0
    mask[:, :b] = 0
    mask[:, -b:] = 0
    return (mask / 255.0).astype(dtype)
