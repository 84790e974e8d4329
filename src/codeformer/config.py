"""Configuration dataclasses and strict YAML I/O.

Every default lives in a dataclass here. A YAML file mirrors its dataclass key for key; an unknown key,
a missing required key or a value of the wrong kind is an error that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or dict that does not match its dataclass."""


@dataclass(frozen=True)
class VQGANConfig:
    """Stage-1 autoencoder (`VQAutoEncoder`). Defaults are the released `vqgan_code1024.pth`."""

    img_size: int = 512
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    codebook_size: int = 1024
    emb_dim: int = 256
    beta: float = 0.25
    # "official": weight 1 on the commitment term, beta on the codebook term (what the released code does);
    # "paper": weight 1 on the codebook term, beta on the commitment term (the VQ-VAE / CodeFormer paper form).
    beta_placement: str = "official"


@dataclass(frozen=True)
class CodeFormerConfig:
    """Stages 2 and 3 network. Defaults are the released `codeformer.pth`."""

    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    dim_embd: int = 512
    n_head: int = 8
    n_layers: int = 9
    connect_list: tuple[int, ...] = (32, 64, 128, 256)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Patch discriminator (`VQGANDiscriminator`). Defaults are the released `vqgan_discriminator.pth`."""

    nc: int = 3
    ndf: int = 64
    n_layers: int = 4


@dataclass(frozen=True)
class DegradationConfig:
    """Synthetic LQ degradation (spec §2.5). Defaults are the official "large" ranges of stages 2 and 3.

    Ranges are (low, high) pairs sampled uniformly. Noise σ and the RGB shift are in 8-bit units (/255).
    The colour options are off by default; only the official colorization config turns them on.
    """

    kernel_size: int = 41
    iso_prob: float = 0.5
    blur_sigma: tuple[float, float] = (1.0, 15.0)
    downsample_range: tuple[float, float] = (4.0, 30.0)
    noise_range: tuple[float, float] = (0.0, 20.0)
    jpeg_range: tuple[float, float] = (30.0, 80.0)
    rgb_shift_prob: float = 0.0
    rgb_shift: float = 20.0
    color_jitter_prob: float = 0.0
    brightness: tuple[float, float] = (0.5, 1.5)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.0, 1.5)
    hue: tuple[float, float] = (-0.1, 0.1)
    gray_prob: float = 0.0
    # `corrupt`: run the blur → down → noise → JPEG → up chain (official `use_corrupt`; off for inpainting).
    # `brush_strokes`: paint free-form white strokes, the inpainting holes (official `gen_inpaint_mask`):
    # strokes per image, vertices per stroke (both inclusive) and stroke width in px at 512 (scaled with the size).
    corrupt: bool = True
    brush_strokes: bool = False
    brush_count: tuple[int, int] = (1, 3)
    brush_vertices: tuple[int, int] = (8, 27)
    brush_width: tuple[float, float] = (30.0, 70.0)

    def __post_init__(self) -> None:
        where = "DegradationConfig"
        for name in ("blur_sigma", "downsample_range", "noise_range", "jpeg_range", "brightness", "contrast",
                     "saturation", "hue", "brush_count", "brush_vertices", "brush_width"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{where}.{name}: expected [low, high] with low <= high, got {pair}")
        if self.brush_count[0] < 1 or self.brush_vertices[0] < 1 or self.brush_width[0] <= 0:
            raise ConfigError(f"{where}: brush_count and brush_vertices must be >= 1 and brush_width > 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"{where}.kernel_size: expected a positive odd size, got {self.kernel_size}")
        if self.downsample_range[0] < 1:
            raise ConfigError(f"{where}.downsample_range: factors must be >= 1, got {self.downsample_range}")


# The two official presets (spec §2.5): "large" for stage 2 and stage 3's code-only iterations, "small" for
# stage 3's fidelity iterations.
DEGRADATION_LARGE = DegradationConfig()
DEGRADATION_SMALL = DegradationConfig(
    blur_sigma=(0.1, 10.0), downsample_range=(1.0, 12.0), noise_range=(0.0, 15.0), jpeg_range=(60.0, 100.0)
)
# The two variant presets (spec §2.5-2.6): colorization = "large" plus RGB shift (p 0.3, ±20), torch colour jitter
# (p 0.3) and grey (p 0.01) (`CodeFormer_colorization.yml`); inpainting = white brush strokes on the clean HQ face,
# nothing else (`CodeFormer_inpainting.yml`: use_corrupt false, gen_inpaint_mask true).
DEGRADATION_COLORIZATION = DegradationConfig(rgb_shift_prob=0.3, rgb_shift=20.0, color_jitter_prob=0.3, gray_prob=0.01)
DEGRADATION_INPAINTING = DegradationConfig(corrupt=False, brush_strokes=True)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrongly typed values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain dict/list form of a (nested) config dataclass, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass `cls`; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return from_dict(cls, data, where=str(path))


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (atomically: temp file, then rename)."""
    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


# ---------------------------------------------------------------------------------------------------------------
# Training (issue 5). Official values from spec §2; stage configs are selected by their `stage` key.

DEGRADATION_PRESETS: Mapping[str, DegradationConfig] = types.MappingProxyType(
    {"large": DEGRADATION_LARGE, "small": DEGRADATION_SMALL, "colorization": DEGRADATION_COLORIZATION,
     "inpainting": DEGRADATION_INPAINTING})
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("constant", "cosine", "multistep")
INIT_FROM = ("codeformer", "vqgan")


def _check_choice(where: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam (official betas, no weight decay) and its learning-rate schedule, stepped once per iteration.

    schedule "constant"; "cosine": a half cosine from `lr` down to `eta_min` over `period` iterations, then
    `eta_min` (the official CosineAnnealingRestartLR with one period); "multistep": `lr` × `gamma` after
    each of `milestones`. `grad_clip`: max global gradient norm, or None for no clipping.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "constant"
    period: int = 0
    eta_min: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        _check_choice("OptimConfig.schedule", self.schedule, LR_SCHEDULES)
        if self.schedule == "cosine" and self.period < 1:
            raise ConfigError(f"OptimConfig.period: a cosine schedule needs period >= 1, got {self.period}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"OptimConfig.grad_clip: expected > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class DataConfig:
    """Training data: a folder of aligned HQ faces (resized to `size`), LQ inputs by degradation preset name
    (`DEGRADATION_PRESETS`), optional precomputed HQ codes (`codeformer codes`). `batch_size` is per process."""

    root: str = "datasets/ffhq/ffhq_512"
    size: int = 512
    batch_size: int = 4
    num_workers: int = 4
    flip: bool = True
    degradations: tuple[str, ...] = ()
    codes_path: str | None = None

    def __post_init__(self) -> None:
        for name in self.degradations:
            _check_choice("DataConfig.degradations", name, tuple(DEGRADATION_PRESETS))
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError(f"DataConfig: batch_size >= 1 and num_workers >= 0 needed, got "
                              f"{self.batch_size}, {self.num_workers}")


@dataclass(frozen=True)
class RunConfig:
    """Loop settings: iterations are 1-based steps; checkpoints go to `<out_dir>/checkpoints/step_XXXXXX/`;
    `keep_checkpoints` > 0 deletes all but that many newest checkpoints (0 keeps all)."""

    out_dir: str = "runs/train"
    iterations: int = 1000
    ema_decay: float = 0.995
    checkpoint_every: int = 10000
    log_every: int = 100
    precision: str = "fp32"
    seed: int = 0
    device: str = "auto"
    keep_checkpoints: int = 0

    def __post_init__(self) -> None:
        _check_choice("RunConfig.precision", self.precision, PRECISIONS)
        _check_choice("RunConfig.device", self.device, DEVICES)
        if self.iterations < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("RunConfig: iterations, checkpoint_every and log_every must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"RunConfig.ema_decay: expected 0 <= decay < 1, got {self.ema_decay}")


@dataclass(frozen=True)
class PerceptualConfig:
    """LPIPS weight files. A null path means `$CODEFORMER_VGG16` / `$CODEFORMER_LPIPS`, else the weights cache
    (downloaded unless offline). `perceptual_random_init: true` uses a random LPIPS instead (smoke tests only)."""

    vgg_path: str | None = None
    lpips_path: str | None = None
    perceptual_random_init: bool = False


@dataclass(frozen=True)
class Stage1Losses:
    """Stage 1 weights: L1, LPIPS, the adaptive GAN weight's scale, the code loss; D and GAN from `d_start`."""

    l1: float = 1.0
    perceptual: float = 1.0
    gan_scale: float = 0.8
    codebook: float = 1.0
    d_start: int = 30001


@dataclass(frozen=True)
class Stage2Losses:
    """Stage 2 weights: cross-entropy on the HQ codes and latent L2 to their codebook rows."""

    cross_entropy: float = 0.5
    latent_l2: float = 1.0


@dataclass(frozen=True)
class Stage3Losses:
    """Stage 3 weights (fidelity iterations use all; code-only iterations use the last two)."""

    l1: float = 1.0
    perceptual: float = 1.0
    gan_scale: float = 0.1
    cross_entropy: float = 0.5
    latent_l2: float = 1.0
    d_start: int = 5001


@dataclass(frozen=True)
class PhaseConfig:
    """One entry of the stage-3 schedule. Step s (1-based) uses the first phase with s <= `until` (null: no
    end) and s % `every` == 0. `w` null means a code-only iteration (CE + latent L2, no D update)."""

    until: int | None
    degradation: str
    w: float | None
    every: int = 1

    def __post_init__(self) -> None:
        _check_choice("PhaseConfig.degradation", self.degradation, tuple(DEGRADATION_PRESETS))
        if self.every < 1:
            raise ConfigError(f"PhaseConfig.every: expected >= 1, got {self.every}")


# The official hard-coded stage-3 schedule (spec §2.4) as data.
OFFICIAL_STAGE3_SCHEDULE = (
    PhaseConfig(until=40000, degradation="small", w=1.0),
    PhaseConfig(until=80000, degradation="small", w=1.3),
    PhaseConfig(until=120000, degradation="large", w=None),
    PhaseConfig(until=None, degradation="small", w=1.3, every=15),
    PhaseConfig(until=None, degradation="large", w=None),
)


def _official_cosine(lr: float, period: int, eta_min: float) -> OptimConfig:
    return OptimConfig(lr=lr, schedule="cosine", period=period, eta_min=eta_min)


@dataclass(frozen=True)
class Stage1Config:
    """Stage I: VQGAN + patch discriminator on HQ faces (spec §2.2)."""

    stage: int = 1
    model: VQGANConfig = field(default_factory=VQGANConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim_g: OptimConfig = field(default_factory=lambda: _official_cosine(7e-5, 1_600_000, 6e-5))
    optim_d: OptimConfig = field(default_factory=lambda: _official_cosine(7e-5, 1_600_000, 6e-5))
    losses: Stage1Losses = field(default_factory=Stage1Losses)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig("runs/stage1", 1_600_000, 0.995))

    def __post_init__(self) -> None:
        if self.stage != 1:
            raise ConfigError(f"Stage1Config.stage: must be 1, got {self.stage}")
        if self.data.size != self.model.img_size:
            raise ConfigError(f"data.size {self.data.size} must equal model.img_size {self.model.img_size}")


@dataclass(frozen=True)
class Stage2Config:
    """Stage II: code prediction from "large"-degraded faces; codebook and generator frozen (spec §2.3).

    `vqgan_path`: the stage-1 weights (`net_g_ema.pth` or `vqgan_code1024.pth`): initialises encoder, codebook and
    generator, and (without `data.codes_path`) is the frozen HQ VQGAN giving the target codes.
    `random_init: true` allows a null `vqgan_path` (random VQGAN; smoke tests only).
    `degradation`: the preset whose LQ faces the step reads ("large"; "colorization" trains the colorization
    model, which the official recipe trains exactly like stage II: `CodeFormer_colorization.yml`)."""

    stage: int = 2
    model: CodeFormerConfig = field(default_factory=CodeFormerConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(degradations=("large",)))
    degradation: str = "large"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=1e-4, schedule="multistep", milestones=(400_000, 450_000), gamma=0.5))
    losses: Stage2Losses = field(default_factory=Stage2Losses)
    vqgan_path: str | None = None
    random_init: bool = False
    run: RunConfig = field(default_factory=lambda: RunConfig("runs/stage2", 500_000, 0.995))

    def __post_init__(self) -> None:
        if self.stage != 2:
            raise ConfigError(f"Stage2Config.stage: must be 2, got {self.stage}")
        if self.degradation not in self.data.degradations:
            raise ConfigError(f"Stage2Config.degradation {self.degradation!r} (the stage-2 input) must be one of "
                              f"data.degradations {list(self.data.degradations)}")
        if self.data.size != self.model.vqgan.img_size:
            raise ConfigError(f"data.size {self.data.size} must equal model.vqgan.img_size")
        if self.vqgan_path is None and not self.random_init:
            raise ConfigError("Stage2Config.vqgan_path is required (or random_init: true for smoke tests)")


@dataclass(frozen=True)
class Stage3Config:
    """Stage III: fidelity fusion with a w / degradation schedule; D from the stage-1 discriminator (spec §2.4,
    upstream #214). `codeformer_path`: stage-2 `net_g_ema.pth`; `discriminator_path`: stage-1 `net_d.pth` or
    `vqgan_discriminator.pth`; `vqgan_path`: frozen HQ VQGAN for the target codes (unless `data.codes_path`).
    `init_from`: "codeformer" (G from `codeformer_path`, the restoration recipe) or "vqgan" (G's encoder, codebook
    and generator from `vqgan_path`, transformer and fusion fresh: the official inpainting recipe, whose
    `pretrain_network_g` is empty)."""

    stage: int = 3
    model: CodeFormerConfig = field(default_factory=CodeFormerConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(batch_size=3, degradations=("small", "large")))
    optim_g: OptimConfig = field(default_factory=lambda: _official_cosine(5e-5, 150_000, 2e-5))
    optim_d: OptimConfig = field(default_factory=lambda: _official_cosine(5e-5, 150_000, 2e-5))
    losses: Stage3Losses = field(default_factory=Stage3Losses)
    schedule: tuple[PhaseConfig, ...] = OFFICIAL_STAGE3_SCHEDULE
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    codeformer_path: str | None = None
    discriminator_path: str | None = None
    vqgan_path: str | None = None
    init_from: str = "codeformer"
    random_init: bool = False
    run: RunConfig = field(default_factory=lambda: RunConfig("runs/stage3", 150_000, 0.997))

    def __post_init__(self) -> None:
        if self.stage != 3:
            raise ConfigError(f"Stage3Config.stage: must be 3, got {self.stage}")
        if not self.schedule or self.schedule[-1].until is not None or self.schedule[-1].every != 1:
            raise ConfigError("Stage3Config.schedule: the last phase needs until: null and every: 1")
        for phase in self.schedule:
            if phase.degradation not in self.data.degradations:
                raise ConfigError(f"Stage3Config.schedule uses degradation {phase.degradation!r}, which is not in "
                                  f"data.degradations {list(self.data.degradations)}")
        if self.data.size != self.model.vqgan.img_size:
            raise ConfigError(f"data.size {self.data.size} must equal model.vqgan.img_size")
        _check_choice("Stage3Config.init_from", self.init_from, INIT_FROM)
        if self.init_from == "vqgan":
            if self.codeformer_path is not None:
                raise ConfigError("Stage3Config: init_from 'vqgan' starts G from vqgan_path; set codeformer_path "
                                  "to null (or init_from: codeformer)")
            needed = {"vqgan_path": self.vqgan_path}
        else:
            needed = {"codeformer_path": self.codeformer_path,
                      "vqgan_path": self.vqgan_path if self.data.codes_path is None else ""}
        missing = [k for k, v in needed.items() if v is None]
        if missing and not self.random_init:
            raise ConfigError(f"Stage3Config: {', '.join(missing)} required (or random_init: true for smoke tests)")


STAGE_CONFIGS: Mapping[int, type] = types.MappingProxyType({1: Stage1Config, 2: Stage2Config, 3: Stage3Config})
