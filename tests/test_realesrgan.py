"""RRDBNet x2plus and the tiled Real-ESRGAN upsampler against the official code (../shared/parity/pipeline,
section (c)), plus tiling, padding, dtype and loader rules on a tiny RRDBNet."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codeformer import weights
from codeformer.checkpoint import CheckpointError
from codeformer.models.rrdbnet import RRDBNet
from codeformer.upsampler import REALESRGAN_FILES, RealESRGAN, load_realesrgan, rrdbnet_from_state_dict
from tests.conftest import PARITY, _fill_module

PIPELINE = PARITY / "pipeline"
FLOAT_TOL = 1e-5  # README "Tolerances": sr_net_out and sr_enh_*_float
HALF_WINDOW = 1e-3  # u8 may differ by 1 level only where float·255 is this close to .5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def filled_sd() -> dict[str, torch.Tensor]:
    return _fill_module().fill_state_dict(str(PIPELINE / "keys_realesrgan_x2plus.json"))


@pytest.fixture(scope="module")
def x2plus(tmp_path_factory, filled_sd) -> RealESRGAN:
    path = tmp_path_factory.mktemp("realesrgan") / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": filled_sd}, path)  # the released layout
    return load_realesrgan(path)


class _Memo(torch.nn.Module):
    """Wraps a net and replays its output for an input it has seen: `upscale_float` and `enhance` then share
    one network pass per tile, which halves this module's full-size cost."""

    def __init__(self, net: RRDBNet) -> None:
        super().__init__()
        self.inner = net
        self.scale, self.size_multiple = net.scale, net.size_multiple
        self.seen: dict[bytes, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = x.numpy().tobytes() + bytes(str(tuple(x.shape)), "ascii")
        if key not in self.seen:
            self.seen[key] = self.inner(x)
        return self.seen[key]


def test_filled_weights_are_the_kits(filled_sd, pipe_ref):
    meta = json.loads(str(pipe_ref["meta_json"]))
    assert _fill_module().state_dict_sha256(filled_sd) == meta["state_dict_sha256"]["realesrgan_x2plus"]


def test_key_layout_is_the_released_one():
    keys = json.loads((PIPELINE / "keys_realesrgan_x2plus.json").read_text())["keys"]
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in RRDBNet(3, 3, scale=2).state_dict().items()]
    assert ours == keys


def test_network_matches_official(x2plus, pipe_ref):
    assert x2plus.scale == 2 and x2plus.net.conv_first.in_channels == 12
    x = torch.from_numpy(pipe_ref["sr_net_in_rgb_u8"].astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = x2plus.net(x).numpy()
    assert out.shape == (1, 3, 96, 80)
    assert np.abs(out - pipe_ref["sr_net_out"]).max() <= FLOAT_TOL


@pytest.mark.parametrize("tile,name", [(0, "tile0"), (64, "tile64")])
def test_enhance_matches_official(x2plus, pipe_ref, tile, name):
    up = RealESRGAN(_Memo(x2plus.net), tile=tile, tile_pad=10, pre_pad=0)
    bgr = pipe_ref["sr_enh_in_bgr_u8"]  # 161×201: both sides odd, so the mod pad is exercised
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    ref_float = pipe_ref[f"sr_enh_{name}_float"]  # RGB, before the clamp
    out_float = up.upscale_float(rgb)
    assert out_float.shape == (3, 322, 402)
    assert np.abs(out_float - ref_float[0]).max() <= FLOAT_TOL

    out = up.enhance(rgb, outscale=2)[..., ::-1]
    ref = pipe_ref[f"sr_enh_{name}_u8"]
    assert out.shape == ref.shape == (322, 402, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    scaled = np.clip(ref_float[0], 0, 1).transpose(1, 2, 0)[..., ::-1] * np.float32(255)
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < HALF_WINDOW
    assert diff.max() <= 1 and not (diff[~near_half] > 0).any()


def test_tiles_of_the_reference_differ(pipe_ref):
    # the reference itself shows that tiling changes the result, so the test above can tell the two apart
    a, b = pipe_ref["sr_enh_tile0_float"], pipe_ref["sr_enh_tile64_float"]
    assert np.abs(a - b).max() > 100 * FLOAT_TOL


# ---------------------------------------------------------------- tiny RRDBNet: tiling, padding, dtypes, loading

def _tiny(scale: int = 2, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)  # centre the output in [0, 1] so the clamp does not hide differences
        net.conv_last.weight.mul_(10.0)  # and spread it over ±0.2 (std ≈ 16 grey levels)
    return net.eval()


def _photo(h: int, w: int, channels: int = 3, seed: int = 3) -> np.ndarray:
    """Smooth colour ramps plus noise: values all over 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = [(128 + 100 * np.sin(xx / 7.0 + c) * np.cos(yy / 11.0 - c)) for c in range(channels)]
    img = np.stack(base, -1) + rng.normal(0, 12, (h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


def _official_float(net: RRDBNet, rgb: np.ndarray, pre_pad: int) -> np.ndarray:
    """The official pre/post-processing on the whole image with torch's reflect pad (independent of our index
    arithmetic): pre-pad, mod-pad, one forward, crop."""
    x = torch.from_numpy(rgb.astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]
    if pre_pad:
        x = F.pad(x, (0, pre_pad, 0, pre_pad), mode="reflect")
    m = net.size_multiple
    ph, pw = -x.shape[2] % m, -x.shape[3] % m
    x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.no_grad():
        out = net(x)[0].numpy()
    h, w = rgb.shape[:2]
    return out[:, : h * net.scale, : w * net.scale]


@pytest.mark.parametrize("scale,pre_pad", [(2, 0), (2, 10), (4, 0), (4, 7), (1, 3)])
def test_whole_image_equals_official_recipe(scale, pre_pad):
    net = _tiny(scale)
    rgb = _photo(33, 47)
    up = RealESRGAN(net, tile=0, tile_pad=0, pre_pad=pre_pad)
    ours = up.upscale_float(rgb)
    assert ours.shape == (3, 33 * scale, 47 * scale)
    np.testing.assert_allclose(ours, _official_float(net, rgb, pre_pad), rtol=0, atol=1e-6)
    u8 = up.enhance(rgb)
    expected = np.round(np.clip(ours, 0, 1).transpose(1, 2, 0) * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(u8, expected)


def test_tiled_equals_untiled_when_the_pad_covers_the_receptive_field():
    net = _tiny(2)
    rgb = _photo(150, 230)
    whole = RealESRGAN(net, tile=0).upscale_float(rgb)
    # 17 convs at half resolution before the ×4 part: a 40-px context covers the receptive field
    tiled = RealESRGAN(net, tile=64, tile_pad=40).upscale_float(rgb)
    assert np.abs(tiled - whole).max() <= 1e-5
    # a 2-px context does not: the seams show
    thin = RealESRGAN(net, tile=64, tile_pad=2).upscale_float(rgb)
    assert np.abs(thin - whole).max() > 1e-3


def test_tiling_bounds_what_the_network_sees():
    net = _tiny(2)
    sizes: list[tuple[int, int]] = []
    net.register_forward_pre_hook(lambda _m, args: sizes.append(tuple(args[0].shape[2:])))
    big = _photo(601, 803)  # odd sizes
    up = RealESRGAN(net, tile=128, tile_pad=16)
    out = up.enhance(big)
    assert out.shape == (1202, 1606, 3) and out.dtype == np.uint8
    assert len(sizes) == 5 * 7  # ceil(602/128) × ceil(804/128) tiles, one forward each
    assert max(max(s) for s in sizes) <= 128 + 2 * 16  # the network's input never grows with the photo
    # every tile was written: no block of the output is flat (an unwritten np.empty block would not vary so)
    blocks = [out[i * 200:(i + 1) * 200, j * 200:(j + 1) * 200] for i in range(6) for j in range(8)]
    assert min(b.std() for b in blocks) > 3


def test_outscale_resizes_with_lanczos():
    up = RealESRGAN(_tiny(2), tile=0)
    rgb = _photo(31, 40)
    native = up.enhance(rgb)
    assert native.shape == (62, 80, 3)
    np.testing.assert_array_equal(up.enhance(rgb, outscale=2), native)
    out = up.enhance(rgb, outscale=3.5)
    assert out.shape == (int(31 * 3.5), int(40 * 3.5), 3)
    np.testing.assert_array_equal(out, cv2.resize(native, (140, 108), interpolation=cv2.INTER_LANCZOS4))


def test_uint16_grey_and_alpha():
    up = RealESRGAN(_tiny(2), tile=32, tile_pad=8)
    rgb = _photo(40, 36)
    u8 = up.enhance(rgb)
    u16 = up.enhance(rgb.astype(np.uint16) * 257)  # the same image in 16 bits
    assert u16.dtype == np.uint16
    assert np.abs(u16 / 257.0 - u8).max() <= 1.0
    dark = up.enhance(np.full((20, 20, 3), 200, np.uint16))  # 16-bit by dtype even when its max is below 256
    assert dark.dtype == np.uint16 and dark.max() > 20000

    grey = rgb[..., 1].copy()
    out_grey = up.enhance(grey)
    assert out_grey.shape == (80, 72) and out_grey.dtype == np.uint8
    f = np.clip(up.upscale_float(np.repeat(grey[..., None], 3, 2)), 0, 1).transpose(1, 2, 0)
    luma = cv2.cvtColor(np.ascontiguousarray(f[..., ::-1]), cv2.COLOR_BGR2GRAY)  # the official BGR→grey
    np.testing.assert_array_equal(out_grey, np.round(luma * np.float32(255)).astype(np.uint8))

    rgba = np.dstack([rgb, grey])
    out_rgba = up.enhance(rgba)
    assert out_rgba.shape == (80, 72, 4)
    np.testing.assert_array_equal(out_rgba[..., :3], u8)
    np.testing.assert_array_equal(out_rgba[..., 3], out_grey)
    np.testing.assert_array_equal(rgba[..., 3], grey)  # input untouched


def test_tiny_and_degenerate_sizes():
    up = RealESRGAN(_tiny(2), tile=16, tile_pad=4, pre_pad=2)
    for h, w in [(1, 1), (1, 9), (7, 2), (17, 33)]:
        assert up.enhance(_photo(h, w)).shape == (2 * h, 2 * w, 3)


def test_bad_arguments():
    net = _tiny(2)
    up = RealESRGAN(net, tile=0)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        up.enhance(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB, RGBA or grey"):
        up.enhance(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="outscale"):
        up.enhance(np.zeros((8, 8, 3), np.uint8), outscale=0.01)
    with pytest.raises(ValueError, match="multiples of 2"):
        RealESRGAN(net, tile=65)
    with pytest.raises(ValueError, match="multiples of 2"):
        RealESRGAN(net, tile=64, tile_pad=5)


def test_loader_reads_params_ema_params_and_bare_dicts(tmp_path):
    sd4 = _tiny(4).state_dict()
    torch.save({"params": sd4}, tmp_path / "x4.pth")
    up = load_realesrgan(tmp_path / "x4.pth", tile=0)
    assert up.scale == 4 and up.net.conv_first.in_channels == 3 and len(up.net.body) == 1
    sd2 = _tiny(2, seed=5).state_dict()
    torch.save({"params_ema": sd2, "params": sd4}, tmp_path / "x2.pth")
    assert load_realesrgan(tmp_path / "x2.pth").scale == 2  # params_ema wins
    torch.save(sd2, tmp_path / "bare.pth")
    assert load_realesrgan(str(tmp_path / "bare.pth")).net.conv_first.in_channels == 12
    broken = dict(sd2)
    del broken["body.0.rdb2.conv3.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        rrdbnet_from_state_dict(broken, "broken.pth")
    with pytest.raises(CheckpointError, match="not an RRDBNet"):
        rrdbnet_from_state_dict({"x": torch.zeros(1)}, "other.pth")
    with pytest.raises(weights.WeightsError, match="no such Real-ESRGAN weights file"):
        load_realesrgan(tmp_path / "absent.pth")


def test_released_names_are_in_the_weights_table(tmp_path, monkeypatch):
    for file in REALESRGAN_FILES.values():
        assert weights.get(file).licence.startswith("BSD-3-Clause")
    assert weights.get("RealESRGAN_x4plus.pth").sha256 is not None
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    with pytest.raises(weights.WeightsError) as err:
        load_realesrgan("RealESRGAN_x2plus")
    assert "\n" not in str(err.value)
    assert f"put it at {tmp_path / 'weights' / 'RealESRGAN_x2plus.pth'}" in str(err.value)
