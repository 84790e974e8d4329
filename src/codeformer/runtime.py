"""Inference runtime: device choice, memory layout, precision and compilation for a CodeFormer.

`TorchRunner(model, device, precision)` has the same `restore(x, w)` as the model, so the photo and video
pipelines take either. Precision "fp32" reproduces the official outputs (parity-tested). "bf16" and "fp16" run
the generator and the fusion blocks (about 85 % of the time) in that reduced type, channels-last, while the
encoder and the transformer, which decide which codes are used, stay in fp32. Measured on the parity kit's
synthetic weights (benchmarks/forward.py, benchmarks/bf16_parts.py): bf16 only in the decoder keeps every code
and gives 42.6 dB PSNR against fp32 at 2.2–2.4× the speed on an AMX CPU; bf16 also in the encoder flips 1.6 % of
the codes and drops to 21 dB. fp16 follows the same per-part policy (the peer port calls the whole network unsafe
in fp16; keeping the encoder and transformer in fp32 is what avoids that); its CPU figures on the same synthetic
weights are in docs/benchmarks.md, and neither reduced type is measured on the released weights or on a GPU here.

On CUDA the runner turns on cuDNN autotuning (the input shape is fixed, 512², so the tuned kernels are reused)
and turns TF32 off (process-wide torch settings: the fp32 parts must really be fp32). `compile=True` runs the
forward through `torch.compile` (one compile for batch 1, one for the other batch sizes, and one per
w value; opt-in, because the first call takes tens of seconds).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .models.codeformer import CodeFormer, Weight

PRECISIONS = ("fp32", "bf16", "fp16")
REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """"auto" → CUDA if available, else MPS, else CPU; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if (name == "cuda" or name.startswith("cuda:")) and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps requested but MPS is not available")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """One line naming the device, e.g. "cuda:0 (NVIDIA H200, 139.8 GiB)" or "cpu (2 threads)"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device`; for CUDA through pinned (page-locked) memory with a non-blocking copy,
    so the CPU goes on queueing work while the transfer runs. Other devices: a plain copy."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


class TorchRunner:
    """A CodeFormer prepared for inference on `device` in `precision` (fp32: parity with the official net).

    channels_last: None → on for the reduced precisions only (see below). compile: run the forward through
    `torch.compile` (compile_backend: its backend; "inductor" is the fast one, "eager" only captures).
    cuda_graphs (CUDA, with compile): inductor's "reduce-overhead" mode, which records a CUDA graph per batch
    size and replays it, removing the per-kernel launch cost; each output is copied out of the graph's memory,
    which the next replay reuses. Not yet measured on a GPU (benchmarks/gpu.py has the rows).
    """

    def __init__(self, model: CodeFormer, device: str | torch.device = "cpu", precision: str = "fp32",
                 channels_last: bool | None = None, compile: bool = False,
                 compile_backend: str = "inductor", cuda_graphs: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        if cuda_graphs and (self.device.type != "cuda" or not compile or compile_backend != "inductor"):
            raise ValueError("cuda_graphs needs a CUDA device and compile=True with the inductor backend")
        self.precision = precision
        # Channels-last lets oneDNN / cuDNN pick faster convolution kernels, but in fp32 those kernels sum in
        # another order and drift up to ~2e-4 from the official outputs (the parity tolerance is 1e-4), so by
        # default only the reduced-precision modes use it.
        if channels_last is None:
            channels_last = precision != "fp32"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.device.type == "cuda":
            # every call has the same 512² shapes: let cuDNN time its algorithms once and keep the fastest
            torch.backends.cudnn.benchmark = True
            # fp32 means fp32: cuDNN's TF32 default keeps ~10 mantissa bits, enough to flip close code choices
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        self.compiled = compile
        self.cuda_graphs = cuda_graphs
        self._forward: Callable[[torch.Tensor, Weight, bool], torch.Tensor] = self._eager_forward
        if cuda_graphs:
            self._forward = torch.compile(self._eager_forward, mode="reduce-overhead")
        elif compile:
            self._forward = torch.compile(self._eager_forward, backend=compile_backend)

    def _eager_forward(self, x: torch.Tensor, w: Weight, adain_latent: bool) -> torch.Tensor:
        p = self.model.predict_latent(x, adain_latent)  # fp32: the code choice
        reduced = REDUCED.get(self.precision)
        with torch.autocast(self.device.type, dtype=reduced or torch.bfloat16, enabled=reduced is not None):
            return self.model.decode(p.latent, p.skips, w)

    def restore(self, x: torch.Tensor, w: Weight = 0.5, adain_latent: bool = True) -> torch.Tensor:
        """Aligned faces (B, 3, S, S) RGB in [-1, 1] → restored faces, float32 on the input's device."""
        dev_in = x.device
        x = host_to_device(x, self.device).to(torch.float32).contiguous(memory_format=self.memory_format)
        if isinstance(w, torch.Tensor):
            w = w.to(self.device)
        if self.compiled and not self.cuda_graphs:
            from torch._dynamo import maybe_mark_dynamic

            maybe_mark_dynamic(x, 0)  # one graph for all batch sizes above 1, not one each
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: earlier outputs are done with
        with torch.inference_mode():
            out = self._forward(x, w, adain_latent)
            if self.cuda_graphs:
                out = out.clone()  # the graph's output memory is overwritten by the next replay
        return out.float().contiguous().to(dev_in)
