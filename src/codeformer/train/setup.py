"""Building what the stages share: the stage config (with overrides), the dataset, LPIPS, initial weights."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .. import weights
from ..checkpoint import CheckpointError, load_state_dict_strict, read_state_dict
from ..config import (
    DEGRADATION_PRESETS,
    STAGE_CONFIGS,
    ConfigError,
    DataConfig,
    OptimConfig,
    PerceptualConfig,
    VQGANConfig,
    from_dict,
)
from ..data.dataset import FaceFolderDataset
from ..losses.perceptual import LPIPSLoss
from ..models.lpips import LPIPS
from ..models.vqgan import VQAutoEncoder
from .runtime import Stepper

log = logging.getLogger(__name__)

StepFn = Callable[[dict[str, torch.Tensor], int, Stepper], dict[str, float | None]]


@dataclass
class StageParts:
    """What a stage hands the shared loop.

    modules: everything checkpointed, by name; "net_g" is the one averaged (EMA) and exported as `params_ema`.
    optimizers / optim_cfgs: by name, each with its schedule and grad-clip setting.
    step: `step(batch, step, stepper) -> metrics` for one iteration (1-based step), the stage's step function.
    exports: file name → (module name, param key) written at every checkpoint; "net_g" is written from EMA.
    last_value_keys: metrics logged as their last value rather than averaged over the log interval.
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    optim_cfgs: dict[str, OptimConfig]
    step: StepFn
    exports: dict[str, tuple[str, str]]
    last_value_keys: tuple[str, ...] = ()


Trained = tuple[nn.Module, torch.optim.Optimizer, OptimConfig]  # a module, its optimizer and its settings


def stage_parts(step: StepFn, net_g: Trained, net_d: Trained | None = None,
                last_value_keys: tuple[str, ...] = ()) -> StageParts:
    """The `StageParts` of a stage that trains `net_g` and, in stages 1 and 3, the discriminator `net_d`: both
    checkpointed under those names; net_g exported from its EMA as net_g_ema.pth (`params_ema`), net_d as
    net_d.pth (`params_d`)."""
    trained = {"net_g": net_g, **({"net_d": net_d} if net_d is not None else {})}
    exports = {"net_g_ema.pth": ("net_g", "params_ema")}
    if net_d is not None:
        exports["net_d.pth"] = ("net_d", "params_d")
    return StageParts(modules={k: m for k, (m, _, _) in trained.items()},
                      optimizers={k: o for k, (_, o, _) in trained.items()},
                      optim_cfgs={k: c for k, (_, _, c) in trained.items()},
                      step=step, exports=exports, last_value_keys=last_value_keys)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Apply `key.sub=value` strings (value parsed as YAML) to a nested config dict; returns a new dict."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. run.iterations=100)")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: --set {key}: {part} is not a section")
        node[leaf] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    """A `--set` value as YAML, except that numbers like `2e-3` (a string to YAML 1.1) become floats."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_stage_config(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Read a stage YAML (its `stage` key picks Stage1/2/3Config), apply `--set` overrides, validate strictly."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, overrides, str(path))
    stage = data.get("stage")
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"{path}: key 'stage' must be one of {', '.join(map(str, STAGE_CONFIGS))}, got {stage!r}")
    return from_dict(STAGE_CONFIGS[stage], data, where=str(path))


def vqgan_config_of(cfg: Any) -> VQGANConfig:
    """The VQGAN part of a stage config (stage 1: `model`; stages 2 and 3: `model.vqgan`)."""
    return cfg.model if isinstance(cfg.model, VQGANConfig) else cfg.model.vqgan


def build_dataset(data: DataConfig, seed: int) -> FaceFolderDataset:
    """The face-folder dataset with the configured degradation presets (items `hq`, `lq_<name>`, `codes`)."""
    presets = {name: DEGRADATION_PRESETS[name] for name in data.degradations}
    return FaceFolderDataset(data.root, size=data.size, degradations=presets, flip=data.flip, seed=seed,
                             codes_path=data.codes_path)


def build_perceptual(cfg: PerceptualConfig, device: torch.device) -> LPIPSLoss:
    """The LPIPS training loss from its weight files, or random (with a warning) for smoke tests."""
    if cfg.perceptual_random_init:
        log.warning("perceptual_random_init: LPIPS has RANDOM weights; the perceptual loss is meaningless "
                    "(smoke tests only)")
        return LPIPSLoss(LPIPS()).to(device)
    vgg = weights.resolve("vgg16-397923af.pth", path=cfg.vgg_path, env_var="CODEFORMER_VGG16")
    lin = weights.resolve("lpips_vgg_v0.1.pth", path=cfg.lpips_path, env_var="CODEFORMER_LPIPS")
    log.info("LPIPS weights: %s, %s", vgg, lin)
    return LPIPSLoss(LPIPS.from_files(vgg, lin)).to(device)


def load_autoencoder_part(model: nn.Module, sd: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a VQGAN state dict's encoder, quantize and generator weights into `model` (a VQAutoEncoder or the
    same-named parts of a CodeFormer); every one of those keys must be present with the right shape."""
    parts = ("encoder.", "quantize.", "generator.")
    own = {k: v for k, v in model.state_dict().items() if k.startswith(parts)}
    picked = {k: v for k, v in sd.items() if k.startswith(parts)}
    missing = [k for k in own if k not in picked]
    extra = [k for k in picked if k not in own]
    wrong = [k for k in own if k in picked and picked[k].shape != own[k].shape]
    if missing or extra or wrong:
        raise CheckpointError(f"{source}: VQGAN weights do not fit: {len(missing)} missing (e.g. {missing[:3]}), "
                              f"{len(extra)} unexpected (e.g. {extra[:3]}), {len(wrong)} wrong shape "
                              f"(e.g. {wrong[:3]})")
    model.load_state_dict(picked, strict=False)


def frozen_vqgan(cfg: VQGANConfig, path: str | Path | None, device: torch.device) -> VQAutoEncoder:
    """The HQ VQGAN that gives stage-2/3 target codes: loaded strictly (random if `path` is None: smoke tests),
    eval mode, no gradients."""
    model = VQAutoEncoder.from_config(cfg)
    if path is None:
        log.warning("no vqgan_path: the HQ VQGAN is RANDOM (random_init; smoke tests only)")
    else:
        load_state_dict_strict(model, read_state_dict(path), path)
    return model.requires_grad_(False).eval().to(device)


def target_codes(batch: dict[str, torch.Tensor], vqgan: VQAutoEncoder | None) -> torch.Tensor:
    """HQ code indices (B, N), row-major: precomputed `codes` when the batch has them, else the frozen VQGAN's
    nearest codes of `hq`."""
    if "codes" in batch:
        return batch["codes"]
    if vqgan is None:
        raise ConfigError("no target codes: set data.codes_path or vqgan_path")
    with torch.no_grad():
        return vqgan.encode(batch["hq"]).indices.flatten(1)
