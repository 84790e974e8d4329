"""Inference runtime: device choice, memory layout and precision for a CodeFormer.

`TorchRunner(model, device, precision)` has the same `restore(x, w)` as the model, so the photo and video
pipelines take either. Precision "fp32" reproduces the official outputs (parity-tested). "bf16" runs the
generator and the fusion blocks (about 85 % of the time) in bfloat16, channels-last, while the encoder and the
transformer, which decide which codes are used, stay in fp32. Measured on the parity kit's weights
(benchmarks/forward.py, benchmarks/bf16_parts.py): bf16 only in the decoder keeps every code and gives 42.6 dB
PSNR against fp32 at 2.2–2.4× the speed on an AMX CPU; bf16 also in the encoder flips 1.6 % of the codes and drops
to 21 dB. fp16 is not offered (the peer port declares CodeFormer unsafe in fp16).
"""

from __future__ import annotations

import torch

from .models.codeformer import CodeFormer, Weight

PRECISIONS = ("fp32", "bf16")


def pick_device(name: str = "auto") -> torch.device:
    """"auto" → CUDA if available, else MPS, else CPU; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps requested but MPS is not available")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)


class TorchRunner:
    """A CodeFormer prepared for inference on `device` in `precision` (fp32: parity with the official net)."""

    def __init__(self, model: CodeFormer, device: str | torch.device = "cpu", precision: str = "fp32",
                 channels_last: bool | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        # Channels-last lets oneDNN / cuDNN pick faster convolution kernels, but in fp32 those kernels sum in
        # another order and drift up to ~2e-4 from the official outputs (the parity tolerance is 1e-4), so by
        # default only the bf16 mode uses it.
        if channels_last is None:
            channels_last = precision == "bf16"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self.memory_format)

    def restore(self, x: torch.Tensor, w: Weight = 0.5, adain_latent: bool = True) -> torch.Tensor:
        """Aligned faces (B, 3, S, S) RGB in [-1, 1] → restored faces, float32 on the input's device."""
        dev_in = x.device
        x = x.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        if isinstance(w, torch.Tensor):
            w = w.to(self.device)
        with torch.inference_mode():
            p = self.model.predict_latent(x, adain_latent)  # fp32: the code choice
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out = self.model.decode(p.latent, p.skips, w)
        return out.float().contiguous().to(dev_in)
