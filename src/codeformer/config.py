"""Configuration dataclasses and strict YAML I/O.

Every default lives in a dataclass here. A YAML file mirrors its dataclass key for key; an unknown key,
a missing required key or a value of the wrong kind is an error that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

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

    def __post_init__(self) -> None:
        where = "DegradationConfig"
        for name in ("blur_sigma", "downsample_range", "noise_range", "jpeg_range", "brightness", "contrast",
                     "saturation", "hue"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{where}.{name}: expected [low, high] with low <= high, got {pair}")
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
