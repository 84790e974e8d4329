"""Face colorization with the released colorization model (`codeformer_colorization.pth`).

The official convention (`inference_colorization.py`): an aligned 512×512 face, the network at w = 0 with AdaIN of
the predicted latent (the fusion blocks are never run; the colorization model was trained at w = 0 only). Here the
same model also runs on whole photos through the `Restorer` pipeline (detect → align → model → paste back); the
faces come back in colour and every pixel away from them is the input's own.

Grey input is what the model is for. A colour input is colorized from its Rec. 601 luma (the model sees a grey
face, so the result does not depend on the input's colours), with a logged note. `from_colour=True` instead feeds
the colour pixels as they are, as the official script does: the model was trained mostly on colour-jittered faces
(grey only 1 % of the time), so this revives faded or tinted colour faces rather than replacing their colours.

Unlike `Restorer`, a grey input does not come back grey: the output Picture is RGB (a one-channel input becomes
three channels, and its grey ICC profile is not written).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from codeformer.data.images import Picture, from_rgb_float
from codeformer.face.align import FACE_SIZE
from codeformer.face.detection import FaceDetector
from codeformer.face.pipeline import (
    FaceModel,
    RestoreOptions,
    Restorer,
    RestoreResult,
    as_rgb_float,
    draw_boxes,
)

log = logging.getLogger(__name__)

COLORIZE_W = 0.0  # official: "w is fixed to 0 since we didn't train the Stage III for colorization"
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # Rec. 601, as images.from_rgb_float uses


class LumaInput:
    """Wraps a face model so that it sees the Rec. 601 luma of its input, replicated in the three channels."""

    def __init__(self, model: FaceModel) -> None:
        self.model = model

    def restore(self, x: torch.Tensor, w: float, adain_latent: bool = True) -> torch.Tensor:
        """x (B, 3, S, S) RGB in [-1, 1] → the model's output for the grey version of x (the weights sum to 1,
        so luma commutes with the [-1, 1] scaling)."""
        luma = (x * _LUMA.to(x.device, x.dtype)).sum(dim=1, keepdim=True)  # (B, 1, S, S)
        return self.model.restore(luma.expand_as(x).contiguous(), w, adain_latent=adain_latent)


def colour_layout(pic: Picture) -> Picture:
    """A three-channel version of `pic` (grey replicated; alpha and metadata kept, a grey ICC profile dropped),
    so that `from_rgb_float` builds a colour output from it."""
    px = pic.pixels
    if px.shape[2] in (3, 4):
        return dataclasses.replace(pic, is_grey=False)
    return dataclasses.replace(pic, pixels=np.repeat(px, 3, axis=2), icc_profile=None, is_grey=False)


class Colorizer(Restorer):
    """Colorizes the faces of grey photos (or aligned crops) with the colorization network.

    model: the colorization CodeFormer (any object with `restore(x, w, adain_latent)`), already on `device`.
    from_colour: feed colour inputs as they are (official script) instead of their luma. The `w` and `adain` of
    the options are ignored: colorization always runs at w = 0 with AdaIN.
    """

    def __init__(self, model: FaceModel, detector: FaceDetector | None = None, device: str | torch.device = "cpu",
                 options: RestoreOptions | None = None, from_colour: bool = False) -> None:
        super().__init__(model if from_colour else LumaInput(model), detector, device, options)
        self.from_colour = from_colour

    def restore(self, image: Picture | np.ndarray, options: RestoreOptions | None = None) -> RestoreResult:
        """Colorize the selected faces of `image` (a Picture or an H×W[×C] array). Returns an RGB result: a
        Picture (three or four channels, the input's depth) or H'×W'×3 float32 in [0, 1]."""
        opts = dataclasses.replace(options or self.options, w=COLORIZE_W, adain=True)
        rgb, grey = as_rgb_float(image)
        if not grey:
            log.warning("colour input: %s", "fed as it is (--from-colour)" if self.from_colour else
                        "colorized from its luma (grey version); --from-colour keeps its colours as a start")
        if opts.aligned and rgb.shape[:2] != (FACE_SIZE, FACE_SIZE):
            log.warning("aligned crop of %d×%d resized to %d×%d for the model and back (the official script "
                        "accepts 512×512 only)", rgb.shape[1], rgb.shape[0], FACE_SIZE, FACE_SIZE)
        # grey=False: the Restorer must not bring the faces back to grey, which is the point here.
        run = self._restore_aligned if opts.aligned else self._restore_photo
        out_rgb, faces, timings = run(rgb, False, opts)
        if opts.draw_boxes:
            out_rgb = draw_boxes(out_rgb, [f.box for f in faces], opts.upscale)
        if isinstance(image, Picture):
            return RestoreResult(from_rgb_float(colour_layout(image), out_rgb), faces, timings)
        return RestoreResult(np.clip(out_rgb, 0.0, 1.0).astype(np.float32), faces, timings)
