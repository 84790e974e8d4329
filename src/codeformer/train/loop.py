"""The shared training loop: data order, the stage's step function, EMA, LR schedules, logging, checkpoints.

Layout of a run directory `<out>`:
    log.jsonl                    one JSON row per log interval (step, lr, mean metrics, seconds per step)
    loss_curve.png               drawn from log.jsonl at every checkpoint
    net_g_ema.pth                EMA generator weights, official `{"params_ema": ...}` layout (latest)
    net_d.pth                    discriminator `{"params_d": ...}` (stages 1 and 3)
    checkpoints/step_XXXXXX/     state.pt (modules, EMA, optimizers, schedulers, scaler, RNG states, step)
                                 and config.yaml (the effective config)

Data order is a function of (seed, epoch): every epoch is a seeded permutation split across ranks
(`DistributedSampler`, also with one process), and every item's flip and degradations are seeded by
(seed, epoch, index) in the dataset. Resuming at step s restarts epoch s // steps_per_epoch at the right batch,
so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..checkpoint import CheckpointError, save_state_dict
from ..config import DataConfig, save_yaml
from ..data.dataset import FaceFolderDataset
from ..runtime import describe_device
from . import stage1, stage2, stage3
from .curve import draw_loss_curve
from .runtime import EMA, DistInfo, Stepper, broadcast_module, init_distributed, scheduler
from .setup import StageParts, build_dataset

log = logging.getLogger(__name__)

BUILDERS = {1: stage1.build, 2: stage2.build, 3: stage3.build}
CURVE_KEYS = ("l1", "perceptual", "codebook", "gan", "d_loss", "cross_entropy", "latent_l2", "code_acc", "total")


@dataclass
class TrainState:
    """Everything that is checkpointed besides the config."""

    parts: StageParts
    ema: EMA
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    stepper: Stepper


def batches(dataset: FaceFolderDataset, data: DataConfig, info: DistInfo, seed: int, start: int, stop: int,
            pin_memory: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (step, batch) for steps start+1 .. stop (1-based), resuming mid-epoch exactly."""
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    per_epoch = len(sampler) // data.batch_size
    if per_epoch == 0:
        raise ValueError(f"{data.root}: {len(dataset)} images is less than one batch of {data.batch_size} "
                         f"per process × {info.world_size} processes")
    epoch, skip = divmod(start, per_epoch)
    step = start
    while step < stop:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        indices = list(sampler)[skip * data.batch_size:per_epoch * data.batch_size]
        loader = DataLoader(dataset, batch_size=data.batch_size, sampler=indices, num_workers=data.num_workers,
                            drop_last=True, pin_memory=pin_memory,
                            generator=torch.Generator().manual_seed(seed + epoch))
        for batch in loader:
            step += 1
            yield step, batch
            if step >= stop:
                return
        epoch, skip = epoch + 1, 0


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch global RNG states (saved with a checkpoint for exact continuation)."""
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (the only place the loop touches global RNGs)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                                                               "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_weights(out: Path, st: TrainState) -> None:
    """Write the stage's weight files (EMA generator as `params_ema`, D as `params_d`) into `out`."""
    for name, (module_name, param_key) in st.parts.exports.items():
        module = st.parts.modules[module_name]
        sd = st.ema.state_dict_for(module) if module_name == "net_g" else module.state_dict()
        save_state_dict(sd, out / name, param_key=param_key)


def save_checkpoint(out: Path, step: int, cfg: Any, st: TrainState) -> Path:
    """Write `<out>/checkpoints/step_XXXXXX/` atomically (temp folder, then rename) and export the weights."""
    final = out / "checkpoints" / f"step_{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in st.parts.modules.items()},
        "ema": st.ema.shadow,
        "optimizers": {k: o.state_dict() for k, o in st.parts.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in st.schedulers.items()},
        "scaler": st.stepper.scaler.state_dict() if st.stepper.scaler is not None else {},
        "rng": rng_state(),
    }
    torch.save(state, tmp / "state.pt")
    save_yaml(cfg, tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    export_weights(out, st)
    return final


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoint folders `<out>/checkpoints/step_N` (not unfinished `.tmp` ones), oldest first."""
    found = [p for p in (out / "checkpoints").glob("step_*")
             if p.name.removeprefix("step_").isdigit() and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints (keep 0: delete none)."""
    if keep > 0:
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest `checkpoints/step_*` of a run folder."""
    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: no checkpoint (expected state.pt or checkpoints/step_*/state.pt)")
    return found[-1]


def load_checkpoint(folder: Path, st: TrainState) -> int:
    """Restore everything `save_checkpoint` wrote into `st` and the global RNGs; returns the step."""
    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{folder / 'state.pt'}: cannot read checkpoint ({e})") from None
    for k, m in st.parts.modules.items():
        m.load_state_dict(state["modules"][k])
    st.ema.load(state["ema"])
    for k, o in st.parts.optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in st.schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    if st.stepper.scaler is not None and state["scaler"]:
        st.stepper.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"])


class MetricLog:
    """Means of the step metrics over each log interval, appended to `log.jsonl` (rank 0 only)."""

    def __init__(self, path: Path, last_value_keys: tuple[str, ...], keep_until: int) -> None:
        self.path = path
        self.last_value_keys = last_value_keys
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float | None] = {}
        self.t0 = time.perf_counter()
        self.steps = 0
        rows = self.read(path) if keep_until > 0 and path.is_file() else []
        kept = [r for r in rows if r["step"] <= keep_until]  # drop rows of an interrupted run past the resume
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def add(self, metrics: dict[str, float | None]) -> None:
        self.steps += 1
        for k, v in metrics.items():
            if k in self.last_value_keys or v is None:
                self.last[k] = v
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def flush(self, step: int, lrs: dict[str, float]) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step, **{f"lr_{k}": v for k, v in lrs.items()}}
        row.update({k: self.sums[k] / self.counts[k] for k in self.sums})
        row.update(self.last)
        row["sec_per_step"] = (time.perf_counter() - self.t0) / max(self.steps, 1)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.sums, self.counts, self.last, self.steps, self.t0 = {}, {}, {}, 0, time.perf_counter()
        return row


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def build_state(cfg: Any, device: torch.device, info: DistInfo) -> TrainState:
    """Build the stage (models initialised from `run.seed`, same on every rank), EMA, schedulers, stepper."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.run.seed)
        parts = BUILDERS[cfg.stage](cfg, device)
    for m in parts.modules.values():
        broadcast_module(m, info)
    scheds = {k: scheduler(o, parts.optim_cfgs[k]) for k, o in parts.optimizers.items()}
    return TrainState(parts, EMA(parts.modules["net_g"]), scheds, Stepper(device, cfg.run.precision, info))


@dataclass
class TrainResult:
    """The run folder and the final in-memory state (models, EMA, optimizers) of this process."""

    out: Path
    state: TrainState


def train(cfg: Any, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Run a Stage1/2/3Config to `cfg.run.iterations` (resuming from a checkpoint or run folder if given).

    Under torchrun every rank runs this; rank 0 logs and saves; the process group is left at the end.
    """
    info, device = init_distributed(cfg.run.device)
    out = Path(cfg.run.out_dir)
    st = build_state(cfg, device, info)
    start = load_checkpoint(find_checkpoint(resume), st) if resume is not None else 0
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        mlog = MetricLog(out / "log.jsonl", st.parts.last_value_keys, keep_until=start)
        log.info("stage %d on %s, %s (%d process(es)); steps %d..%d; output %s", cfg.stage,
                 describe_device(device), cfg.run.precision, info.world_size, start + 1, cfg.run.iterations, out)
    dataset = build_dataset(cfg.data, cfg.run.seed)
    net_g = st.parts.modules["net_g"]
    bar = tqdm(total=cfg.run.iterations, initial=start, disable=not (progress and info.is_main), unit="it")
    for step, batch in batches(dataset, cfg.data, info, cfg.run.seed, start, cfg.run.iterations,
                               pin_memory=device.type == "cuda"):
        metrics = st.parts.step(_to_device(batch, device), step, st.stepper)
        st.stepper.end_iteration()
        with warnings.catch_warnings():
            # D's optimizer does not step before d_start; its schedule still advances with the iteration count
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for s in st.schedulers.values():
                s.step()
        st.ema.update(net_g, cfg.run.ema_decay)
        if info.enabled:
            for m in st.parts.modules.values():
                for b in m.buffers():
                    dist.broadcast(b.data, src=0)  # BatchNorm statistics follow rank 0, as DDP does
        bar.update(1)
        if not info.is_main:
            continue
        mlog.add(metrics)
        if step % cfg.run.log_every == 0 or step == cfg.run.iterations:
            lrs = {k: o.param_groups[0]["lr"] for k, o in st.parts.optimizers.items()}
            row = mlog.flush(step, lrs)
            bar.set_postfix({k: f"{row[k]:.4g}" for k in CURVE_KEYS if isinstance(row.get(k), float)}, refresh=False)
        if step % cfg.run.checkpoint_every == 0 or step == cfg.run.iterations:
            save_checkpoint(out, step, cfg, st)
            prune_checkpoints(out, cfg.run.keep_checkpoints)
            draw_loss_curve(MetricLog.read(out / "log.jsonl"), out / "loss_curve.png", CURVE_KEYS)
    bar.close()
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(out, st)
