"""Helpers for the serve and ONNX tests: a tiny CodeFormer behind the pipeline's 512-pixel face contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codeformer.face.pipeline import Restorer
from codeformer.models.codeformer import CodeFormer
from tests.conftest import TINY_CODEFORMER

FACE = 512


class TinyFaceModel:
    """A random-weight TINY CodeFormer (32 px) behind `restore(x (B,3,512,512), w)`: the faces are shrunk to
    32 px, restored, and the change is added back at 512 px (so the output keeps the input's detail and still
    depends on w through the real fusion blocks). `inner` can be any model with the 32-px contract (e.g. an
    `OnnxRestorer` of the same network)."""

    def __init__(self, inner: object | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if inner is None:
            torch.manual_seed(seed)
            inner = CodeFormer(**TINY_CODEFORMER).eval().to(device)
        self.inner = inner
        self.calls: list[int] = []  # batch size of every call, to observe batching

    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        self.calls.append(len(x))
        small = F.interpolate(x, size=(32, 32), mode="area")  # (B, 3, 32, 32)
        delta = self.inner.restore(small, w, adain_latent=adain_latent) - small
        return x + F.interpolate(delta, size=(FACE, FACE), mode="bilinear", align_corners=False)


def tiny_restorer(inner: object | None = None, device: str | torch.device = "cpu") -> Restorer:
    """A `Restorer` on the tiny model with the default (dlib) detector; the random tiny network on `device`."""
    return Restorer(TinyFaceModel(inner, device=device), device=device)
