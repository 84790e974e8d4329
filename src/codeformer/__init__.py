"""codeformer: blind face restoration with the CodeFormer method (Zhou et al., NeurIPS 2022).

The public API, imported on first use so that `import codeformer` stays light:

    CodeFormer, VQAutoEncoder, PatchDiscriminator   the networks (codeformer.models)
    load_codeformer, read_state_dict                safe checkpoint loading (codeformer.checkpoint)
    Restorer, RestoreOptions                        whole-photo restoration (codeformer.face.pipeline)
    Colorizer, Inpainter                            the colorization / inpainting models on faces (codeformer.face)
    read_image, write_image                         faithful image I/O (codeformer.data.images)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "CodeFormer": "codeformer.models.codeformer",
    "VQAutoEncoder": "codeformer.models.vqgan",
    "PatchDiscriminator": "codeformer.models.discriminator",
    "load_codeformer": "codeformer.checkpoint",
    "read_state_dict": "codeformer.checkpoint",
    "Restorer": "codeformer.face.pipeline",
    "RestoreOptions": "codeformer.face.pipeline",
    "Colorizer": "codeformer.face.colorize",
    "Inpainter": "codeformer.face.inpaint",
    "read_image": "codeformer.data.images",
    "write_image": "codeformer.data.images",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'codeformer' has no attribute {name!r}")
