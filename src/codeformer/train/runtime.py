"""Training runtime pieces: device choice, distributed setup, mixed precision, EMA and LR schedules.

Distributed training (`torchrun --nproc_per_node N`) uses one process per device. Gradients are averaged
across processes by `GradReducer`: bucketed asynchronous all-reduces started from gradient hooks while backward
runs, the arithmetic and the overlap of DistributedDataParallel's reducer. It is done with hooks rather than a
DDP wrapper because the stage steps call sub-modules and methods (`encoder`, `predict_codes`, `autograd.grad`
for the adaptive GAN weight) that bypass a wrapper's forward.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError, OptimConfig

log = logging.getLogger(__name__)


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" → cuda:<local_rank> if available, else mps, else cpu; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("run.device: cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("run.device: mps requested but MPS is not available")
    return torch.device(name)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local_rank)
    if world <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), device


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (start of training, and BatchNorm statistics)."""
    if info.enabled:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


class GradReducer:
    """Averages the gradients of `params` across ranks while backward is still running.

    The parameters are grouped, in reverse order (about the order backward produces their gradients), into
    buckets of about `bucket_mb` MB. A hook on each parameter (`register_post_accumulate_grad_hook`) counts the
    gradients that are done; when a bucket is complete, its gradients are flattened and an asynchronous
    all-reduce starts, so the transfer overlaps the rest of backward, as DistributedDataParallel's reducer does.
    Buckets start strictly in order (a complete bucket waits for the ones before it), so every rank issues the
    same collectives in the same order. `start(loss)` walks the loss's autograd graph first and counts the
    parameters it cannot reach (a stage-3 code-only step never reaches the fusion blocks) as done, so they hold
    no bucket back; a bucket of such parameters only is not reduced at all (the graph, hence the choice, is the
    same on every rank), as DDP does with find_unused_parameters. `finish()` waits and writes the means back;
    parameters without a gradient keep none. Hooks act only between `start()` and `finish()`.
    """

    def __init__(self, params: Iterable[nn.Parameter], info: DistInfo, bucket_mb: float = 25.0) -> None:
        self.info = info
        self.buckets: list[list[nn.Parameter]] = []
        limit, size, key = bucket_mb * 2**20, 0.0, None
        for p in reversed(list(params)):
            p_key = (p.dtype, p.device)
            if not self.buckets or size >= limit or p_key != key:
                self.buckets.append([])
                size, key = 0.0, p_key
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self._bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._ready = [0] * len(self.buckets)
        self._used = [True] * len(self.buckets)  # whether the bucket has a parameter the loss reaches
        self._next = 0  # the next bucket to start
        self._launched: list[tuple[int, torch.Tensor, object]] = []
        self._armed = False
        for bucket in self.buckets:
            for p in bucket:
                p.register_post_accumulate_grad_hook(self._on_grad)

    def start(self, loss: torch.Tensor) -> None:
        """Arm the hooks for the backward pass of `loss`."""
        reached = _reached_leaves(loss)
        self._ready = [sum(id(p) not in reached for p in bucket) for bucket in self.buckets]
        self._used = [ready < len(bucket) for ready, bucket in zip(self._ready, self.buckets, strict=True)]
        self._next, self._launched, self._armed = 0, [], True
        self._launch_ready()  # leading buckets the loss does not reach

    def _on_grad(self, p: nn.Parameter) -> None:
        if self._armed:
            self._ready[self._bucket_of[id(p)]] += 1
            self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and self._ready[self._next] == len(self.buckets[self._next]):
            self._launch(self._next)

    def _launch(self, b: int) -> None:
        self._next = b + 1
        if not self._used[b]:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.buckets[b]])
        self._launched.append((b, flat, dist.all_reduce(flat, async_op=True)))

    def finish(self) -> None:
        """Start the buckets not yet started, wait for all, and replace each gradient by its mean over ranks
        (parameters without a gradient keep none)."""
        while self._next < len(self.buckets):
            self._launch(self._next)
        self._armed = False
        for b, flat, work in self._launched:
            work.wait()
            flat /= self.info.world_size
            offset = 0
            for p in self.buckets[b]:
                if p.grad is not None:
                    p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        self._launched = []


def _reached_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) whose gradient backward from `loss` accumulates."""
    found: set[int] = set()
    seen: set[object] = set()
    stack = [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their parameter
        if leaf is not None:
            found.add(id(leaf))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


class Stepper:
    """Autocast and the optimizer step shared by all stages.

    precision "fp32" | "bf16" | "fp16"; fp16 needs CUDA and uses a GradScaler. `optimize(loss, opt)` runs
    backward, averages gradients across ranks, clips (if configured) and steps; `end_iteration()` updates
    the scaler once per iteration.
    """

    def __init__(self, device: torch.device, precision: str, info: DistInfo) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError(f"run.precision: fp16 needs a CUDA device (got {device.type}); use bf16 or fp32")
        self.device = device
        self.precision = precision
        self.info = info
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self._reducers: dict[int, GradReducer] = {}  # by id(optimizer), made on its first step

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision region for forward passes (no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None) -> None:
        """backward (gradients averaged across ranks as they are made) → unscale → clip → step → zero_grad for
        `optimizer`'s parameters."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        reducer = self._reducer(optimizer, params)
        if reducer is not None:
            reducer.start(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if reducer is not None:
            reducer.finish()
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _reducer(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> GradReducer | None:
        if not self.info.enabled:
            return None
        if id(optimizer) not in self._reducers:
            self._reducers[id(optimizer)] = GradReducer(params, self.info)
        return self._reducers[id(optimizer)]

    def end_iteration(self) -> None:
        if self.scaler is not None:
            self.scaler.update()


def adam(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Adam:
    """Adam over the parameters that require gradients (the official rule), with the configured settings."""
    trainable = [p for p in params if p.requires_grad]
    return torch.optim.Adam(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int) -> float:
    """Multiplier of `cfg.lr` after `step` scheduler steps (step 0 = the first iteration)."""
    if cfg.schedule == "cosine":
        t = min(step, cfg.period) / cfg.period
        eta = cfg.eta_min + 0.5 * (cfg.lr - cfg.eta_min) * (1.0 + math.cos(math.pi * t))
        return eta / cfg.lr
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.milestones if step >= m)
    return 1.0


def scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following `lr_factor`; its state (the step count) is checkpointed with the optimizer."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))


class EMA:
    """Exponential moving average of a module's parameters (not buffers): ema ← d·ema + (1 − d)·p."""

    def __init__(self, module: nn.Module) -> None:
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float) -> None:
        for k, p in module.named_parameters():
            self.shadow[k].mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    def state_dict_for(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """`module.state_dict()` with parameters replaced by their averages (the `params_ema` layout)."""
        sd = module.state_dict()
        return {k: (self.shadow[k] if k in self.shadow else v).detach().clone() for k, v in sd.items()}

    def load(self, shadow: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(shadow)
        if missing:
            raise ValueError(f"EMA state does not fit the model: {sorted(missing)[:5]}")
        for k, v in shadow.items():
            self.shadow[k].copy_(v)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients to `module`'s parameters (D during the generator step)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
