"""Real-ESRGAN image upsampler: the official `RealESRGANer.enhance` on our RRDBNet, tiled so memory stays bounded.

Steps, as the official code does them (basicsr/utils/realesrgan_utils.py in the CodeFormer repo):

1. uint8 → float32 / 255 (uint16 → / 65535); a grey image is replicated to three channels.
2. Reflect-pad right and bottom by `pre_pad`, then to a multiple of the unshuffle factor (2 for a ×2 net, 4
   for ×1); reflection does not repeat the edge pixel.
3. Cut the padded image into `tile × tile` tiles, row-major; each is run with `tile_pad` pixels of real context
   on every side (clipped at the image edge) and only its un-padded part is kept — no blending, no overlap.
   `tile=0` runs the whole image at once.
4. Crop off the pads, clamp to [0, 1], × 255 in float32, round half to even, cast to uint8 (uint16: × 65535).
   A grey image comes back grey (cv2 BGR→grey weights); an alpha channel is enlarged by the network too.
5. If `outscale` differs from the net's scale, resize the result with cv2 INTER_LANCZOS4 to
   `(int(w · outscale), int(h · outscale))`.

Unlike the official code, which builds the whole padded float image and the whole float output before
converting, each tile is read from the integer input and written straight into the integer output, so the
working memory is the input, the output and one tile's activations, whatever the photo size. The results are
the same: every step after the network is per pixel.

Channel order at this API is **RGB** (RGBA, or 2-D grey); the official code takes BGR and converts, so a BGR
caller passes `img[..., ::-1]` and flips the result back. The one deliberate difference: the official code picks
16-bit mode when the image maximum exceeds 256; here the dtype decides (a uint16 image is 16-bit even when dark),
which is the same for every uint8 image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from codeformer import weights
from codeformer.checkpoint import CheckpointError, load_state_dict_strict, read_state_dict
from codeformer.models.rrdbnet import RRDBNet

# table name → the released file in `codeformer.weights`
REALESRGAN_FILES = {"RealESRGAN_x2plus": "RealESRGAN_x2plus.pth", "RealESRGAN_x4plus": "RealESRGAN_x4plus.pth"}
OFFICIAL_TILE = 400  # inference_codeformer.py: --bg_tile 400, tile_pad 40, pre_pad 0
OFFICIAL_TILE_PAD = 40
_MAX_VALUE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def rrdbnet_from_state_dict(sd: dict[str, torch.Tensor], source: str | os.PathLike[str] = "state dict") -> RRDBNet:
    """An RRDBNet whose scale, width, depth and growth are read from the keys (x2plus, x4plus, the 6-block anime
    model all load), with the weights loaded strictly."""
    if "conv_first.weight" not in sd or "body.0.rdb1.conv1.weight" not in sd:
        raise CheckpointError(f"{source}: not an RRDBNet (Real-ESRGAN) checkpoint (no conv_first / body.0 keys)")
    num_feat, in_ch = sd["conv_first.weight"].shape[:2]
    out_ch = sd["conv_last.weight"].shape[0] if "conv_last.weight" in sd else 3
    unshuffle = {out_ch: 1, 4 * out_ch: 2, 16 * out_ch: 4}.get(in_ch)
    if unshuffle is None:
        raise CheckpointError(f"{source}: conv_first takes {in_ch} channels, which fits no RRDBNet scale")
    num_block = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    net = RRDBNet(out_ch, out_ch, scale=4 // unshuffle, num_feat=num_feat, num_block=num_block,
                  num_grow_ch=sd["body.0.rdb1.conv1.weight"].shape[0])
    load_state_dict_strict(net, sd, source)
    return net.eval()


@dataclass
class RealESRGAN:
    """The tiled upsampler. `tile=0` runs the whole image in one pass (memory grows with the photo);
    the defaults are the official script's `tile=400, tile_pad=40, pre_pad=0`."""

    net: RRDBNet
    tile: int = OFFICIAL_TILE
    tile_pad: int = OFFICIAL_TILE_PAD
    pre_pad: int = 0

    def __post_init__(self) -> None:
        m = self.net.size_multiple
        if self.tile < 0 or self.tile_pad < 0 or self.pre_pad < 0:
            raise ValueError(f"tile, tile_pad and pre_pad must be >= 0, got {self.tile}, {self.tile_pad}, "
                             f"{self.pre_pad}")
        if self.tile % m or self.tile_pad % m:
            # an odd tile edge would reach pixel_unshuffle with an odd size (the official code then fails)
            raise ValueError(f"tile ({self.tile}) and tile_pad ({self.tile_pad}) must be multiples of {m} "
                             f"for a x{self.net.scale} network")

    @property
    def scale(self) -> int:
        return self.net.scale

    def _padded_index(self, n: int) -> np.ndarray:
        """Source row (or column) of every padded position: reflect by `pre_pad`, then up to the multiple."""
        idx = np.pad(np.arange(n), (0, self.pre_pad), mode="reflect") if self.pre_pad else np.arange(n)
        extra = -len(idx) % self.net.size_multiple
        return np.pad(idx, (0, extra), mode="reflect") if extra else idx

    def tiles(self, img: np.ndarray, max_value: int,
              progress: bool = False) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """Run the network tile by tile on `img` ((H, W, 3) RGB or (H, W) grey, integer).

        Yields `(rows, cols, out)`: `out` is the network's (3, h, w) float32 RGB output, unclamped, for the
        region `[rows, cols]` of the (H·scale, W·scale) result; the regions cover it once, in row-major tile
        order. The network never sees more than `(tile + 2·tile_pad)²` pixels at once.
        """
        h, w = img.shape[:2]
        s = self.scale
        rows, cols = self._padded_index(h), self._padded_index(w)
        hp, wp = len(rows), len(cols)
        tile = self.tile or max(hp, wp)
        ny, nx = math.ceil(hp / tile), math.ceil(wp / tile)
        device = next(self.net.parameters()).device
        pad = self.tile_pad
        with tqdm(total=ny * nx, desc="Real-ESRGAN tiles", unit="tile", disable=not progress, leave=False) as bar:
            for ty in range(ny):
                for tx in range(nx):
                    y0, x0 = ty * tile, tx * tile
                    y1, x1 = min(y0 + tile, hp), min(x0 + tile, wp)
                    bar.update(1)
                    if y0 >= h or x0 >= w:
                        continue  # the tile lies wholly in the padding, which is cropped off anyway
                    py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
                    py1, px1 = min(y1 + pad, hp), min(x1 + pad, wp)
                    patch = img[np.ix_(rows[py0:py1], cols[px0:px1])]
                    if patch.ndim == 2:
                        patch = np.repeat(patch[..., None], 3, axis=2)
                    x = torch.from_numpy(patch.astype(np.float32) / np.float32(max_value))
                    with torch.inference_mode():
                        out = self.net(x.permute(2, 0, 1)[None].to(device))[0].float().cpu().numpy()
                    ye, xe = min(y1, h), min(x1, w)  # keep the tile's own pixels, minus the right/bottom pads
                    oy, ox = (y0 - py0) * s, (x0 - px0) * s
                    yield (slice(y0 * s, ye * s), slice(x0 * s, xe * s),
                           out[:, oy:oy + (ye - y0) * s, ox:ox + (xe - x0) * s])

    def upscale_float(self, img: np.ndarray) -> np.ndarray:
        """The network's whole (3, H·scale, W·scale) float32 RGB output, before the clamp, for an RGB (or grey)
        uint8/uint16 image — the official `post_process` result. Holds the full float output in memory: for
        inspection and tests; `enhance` is the bounded path."""
        max_value = _max_value(img)
        out = np.empty((3, img.shape[0] * self.scale, img.shape[1] * self.scale), np.float32)
        for rows, cols, part in self.tiles(img[..., :3] if img.ndim == 3 else img, max_value):
            out[:, rows, cols] = part
        return out

    def enhance(self, img: np.ndarray, outscale: float | None = None, progress: bool = False) -> np.ndarray:
        """Enlarge `img` ((H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey; uint8 or uint16) by the network's scale,
        then to `outscale` with LANCZOS4 if that differs (None = the network's scale). Returns the same layout
        and dtype, size `(int(H·outscale), int(W·outscale))`. The input is not modified."""
        max_value = _max_value(img)
        if img.ndim == 3 and img.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB, RGBA or grey image, got shape {img.shape}")
        if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W[, C]) image, got shape {img.shape}")
        h, w = img.shape[:2]
        if outscale is not None and not (outscale > 0 and int(h * outscale) >= 1 and int(w * outscale) >= 1):
            raise ValueError(f"outscale {outscale} gives an empty image for a {w}x{h} input")
        s = self.scale
        out = np.empty((h * s, w * s) + img.shape[2:], img.dtype)
        colour = img[..., :3] if img.ndim == 3 else img
        for rows, cols, part in self.tiles(colour, max_value, progress):
            rgb = np.clip(part, 0.0, 1.0).transpose(1, 2, 0)
            if img.ndim == 2:
                out[rows, cols] = _to_int(_grey(rgb), max_value, img.dtype)
            else:
                out[rows, cols, :3] = _to_int(rgb, max_value, img.dtype)
        if img.ndim == 3 and img.shape[2] == 4:
            for rows, cols, part in self.tiles(img[..., 3], max_value, progress):
                out[rows, cols, 3] = _to_int(_grey(np.clip(part, 0.0, 1.0).transpose(1, 2, 0)), max_value, img.dtype)
        if outscale is not None and outscale != float(s):
            out = cv2.resize(out, (int(w * outscale), int(h * outscale)), interpolation=cv2.INTER_LANCZOS4)
        return out


def _max_value(img: np.ndarray) -> int:
    if img.dtype not in _MAX_VALUE:
        raise ValueError(f"expected a uint8 or uint16 image, got {img.dtype}")
    return _MAX_VALUE[img.dtype]


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 RGB → (h, w) with cv2's BGR→grey, on BGR order as the official code calls it."""
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)


def _to_int(x: np.ndarray, max_value: int, dtype: np.dtype) -> np.ndarray:
    """[0, 1] float32 → integers: × max in float32, round half to even (np.round), cast."""
    return np.round(x * np.float32(max_value)).astype(dtype)


def load_realesrgan(name_or_path: str | os.PathLike[str] = "RealESRGAN_x2plus", device: str | torch.device = "cpu",
                    tile: int = OFFICIAL_TILE, tile_pad: int = OFFICIAL_TILE_PAD, pre_pad: int = 0,
                    offline: bool | None = None, progress: bool = True) -> RealESRGAN:
    """A `RealESRGAN` upsampler from a released model name (`RealESRGAN_x2plus`, `RealESRGAN_x4plus`, with or
    without `.pth`: found in the weights cache or downloaded; offline, a missing file raises `WeightsError`
    saying where to put it) or from a path to a `.pth` / `.safetensors` file (`params_ema`, else `params`, else
    a bare state dict). Read with `weights_only=True`; the architecture is taken from the keys."""
    key = str(name_or_path).removesuffix(".pth")
    if key in REALESRGAN_FILES:
        file = weights.resolve(REALESRGAN_FILES[key], offline=offline, progress=progress)
    else:
        file = Path(name_or_path).expanduser()
        if not file.is_file():
            known = ", ".join(REALESRGAN_FILES)
            raise weights.WeightsError(f"{file}: no such Real-ESRGAN weights file (and not one of the released "
                                       f"names: {known})")
    net = rrdbnet_from_state_dict(read_state_dict(file), file).to(device)
    return RealESRGAN(net, tile=tile, tile_pad=tile_pad, pre_pad=pre_pad)
