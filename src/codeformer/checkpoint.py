"""Safe checkpoint loading and saving, strict key checking, and `.pth` → `.safetensors` conversion.

Released files are `torch.save({'params_ema': state_dict})` (BasicSR layout); we read them with
`weights_only=True`, so no arbitrary object is ever unpickled. Our models use the official key names, so no key
mapping is needed beyond stripping a DDP `module.` prefix.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .models.codeformer import CodeFormer
from .models.discriminator import PatchDiscriminator
from .models.vqgan import VQAutoEncoder

log = logging.getLogger(__name__)

PARAM_KEYS = ("params_ema", "params", "params_d")  # tried in this order inside a BasicSR-style file
_MAX_LISTED = 8


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a `.pth` file (its `params_ema`, else `params`, else
    `params_d`, else the file itself if it is a flat dict of tensors). A `module.` prefix is stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch words it "Unsupported global: GLOBAL x.y", or "unsupported GLOBAL x.y whose module x is
            # blocked"; either way the weights-only unpickler met a Python object and stopped before running it.
            found = re.search(r"unsupported global(?:: GLOBAL)? (\S+)", str(e), re.IGNORECASE)
            if found:
                raise CheckpointError(f"{path}: refused to load: it holds a Python object ({found.group(1)}), "
                                      "not just tensors; only weights-only checkpoints are read") from None
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or another format)") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
        sd = _pick_state_dict(obj, path)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _pick_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in PARAM_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # a bare state dict
        raise CheckpointError(f"{path}: no state dict inside (top-level keys: {', '.join(map(str, obj))[:200]}; "
                              f"expected one of {', '.join(PARAM_KEYS)})")
    raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")


def key_report(model: nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """Empty string when `sd` fits `model` exactly; otherwise a few lines listing missing, unexpected and
    wrong-shape keys (at most a handful of each, with counts)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} (file {tuple(sd[k].shape)}, model {tuple(v.shape)})"
             for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            lines.append(f"  {len(items)} {title}: {', '.join(items[:_MAX_LISTED])}{more}")
    return "\n".join(lines)


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `sd` into `model`; any key mismatch raises CheckpointError with the report."""
    report = key_report(model, sd)
    if report:
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}:\n{report}")
    model.load_state_dict(sd, strict=True)


def codeformer_from_state_dict(sd: dict[str, torch.Tensor], source: str | Path = "state dict") -> CodeFormer:
    """Build a CodeFormer whose codebook size and fusion resolutions are read from the keys (so the
    restoration, colorization and inpainting releases all load), then load the weights strictly."""
    if "quantize.embedding.weight" not in sd:
        raise CheckpointError(f"{source}: not a CodeFormer checkpoint (no quantize.embedding.weight)")
    codebook_size = sd["quantize.embedding.weight"].shape[0]
    connect = sorted({int(k.split(".")[1]) for k in sd if k.startswith("fuse_convs_dict.")})
    model = CodeFormer(codebook_size=codebook_size, connect_list=tuple(connect))
    load_state_dict_strict(model, sd, source)
    return model.eval()


def load_codeformer(path: str | Path, device: str | torch.device = "cpu") -> CodeFormer:
    """CodeFormer from a released `.pth` or a `.safetensors` file, in eval mode on `device`."""
    return codeformer_from_state_dict(read_state_dict(path), path).to(device)


def load_vqgan(path: str | Path, device: str | torch.device = "cpu") -> VQAutoEncoder:
    """Stage-1 VQAutoEncoder (released config) from `vqgan_code1024.pth` or a safetensors file."""
    sd = read_state_dict(path)
    model = VQAutoEncoder(codebook_size=sd["quantize.embedding.weight"].shape[0]
                          if "quantize.embedding.weight" in sd else 1024)
    load_state_dict_strict(model, sd, path)
    return model.eval().to(device)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> PatchDiscriminator:
    """Patch discriminator (released config) from `vqgan_discriminator.pth` or a safetensors file."""
    model = PatchDiscriminator()
    load_state_dict_strict(model, read_state_dict(path), path)
    return model.eval().to(device)


def save_state_dict(sd: dict[str, torch.Tensor], path: str | Path, param_key: str = "params_ema",
                    metadata: dict[str, str] | None = None) -> None:
    """Write `sd` atomically: `.safetensors` by extension, else the official `{param_key: sd}` `.pth`."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({param_key: tensors}, tmp)


def convert(src: str | Path, dst: str | Path) -> int:
    """Rewrite a checkpoint in another format (e.g. `.pth` → `.safetensors`); returns the number of tensors."""
    sd = read_state_dict(src)
    save_state_dict(sd, dst, metadata={"converted_from": Path(src).name})
    return len(sd)
