"""ParseNet and the parse paste mask against the official code (../shared/parity/pipeline, section (b) and the
"Parse mask" step of (d)), plus loading rules and batching on a tiny config.

The full-size forward (a few seconds to ~20 s on 2 threads) runs once per session, in the `official_logits`
fixture."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from codeformer import weights
from codeformer.checkpoint import CheckpointError
from codeformer.face.parsing import load_parsenet, parse, parse_logits, parse_mask, preprocess
from codeformer.models.parsenet import ParseNet
from tests.conftest import PARITY, _fill_module

PIPELINE = PARITY / "pipeline"
LOGIT_TOL = 5e-3  # README "Tolerances": fp64 vs the fp32 reference differs by 1.1e-3
ARGMAX_MARGIN = 1e-2
MASK_TOL = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def filled_sd(pipe_ref) -> dict[str, torch.Tensor]:
    sd = _fill_module().fill_state_dict(str(PIPELINE / "keys_parsenet.json"))  # seed from the json
    return sd


@pytest.fixture(scope="module")
def parsenet_file(tmp_path_factory, filled_sd) -> object:
    path = tmp_path_factory.mktemp("parsenet") / "parsing_parsenet.pth"
    torch.save(filled_sd, path)  # the released layout: a bare state dict
    return path


@pytest.fixture(scope="module")
def official_logits(parsenet_file, parity_ref) -> np.ndarray:
    """The one full-size forward of this module: logits (1, 19, 512, 512) for the kit's input face."""
    net = load_parsenet(parsenet_file)
    torch.set_num_threads(2)  # large convolutions: two threads pay off here
    try:
        return parse_logits(net, parity_ref["input_rgb_u8"]).numpy()
    finally:
        torch.set_num_threads(1)


def test_filled_weights_are_the_kits(filled_sd, pipe_ref):
    meta = json.loads(str(pipe_ref["meta_json"]))
    assert _fill_module().state_dict_sha256(filled_sd) == meta["state_dict_sha256"]["parsenet"]


def test_key_layout_is_the_released_one():
    keys = json.loads((PIPELINE / "keys_parsenet.json").read_text())["keys"]
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in ParseNet().state_dict().items()]
    assert ours == keys


def test_logits_match_official(official_logits, pipe_ref):
    assert official_logits.shape == (1, 19, 512, 512)
    assert np.abs(official_logits[:, :, ::4, ::4] - pipe_ref["pn_logits_s4"]).max() <= LOGIT_TOL
    assert np.abs(official_logits[:, :, 256] - pipe_ref["pn_logits_row256"]).max() <= LOGIT_TOL


def test_argmax_matches_official_where_clear(official_logits, pipe_ref):
    labels = official_logits[0].argmax(0)
    clear = pipe_ref["pn_margin_f16"].astype(np.float32) > ARGMAX_MARGIN
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], pipe_ref["pn_argmax_u8"][clear])


def test_parse_mask_matches_official_helper(pipe_ref):
    labels = pipe_ref["fh_parse_argmax_u8"]
    ref = pipe_ref["fh_parse_mask_face_f32"]
    mask = parse_mask(labels)
    assert mask.dtype == np.float32 and mask.shape == (512, 512)
    assert np.abs(mask - ref).max() <= MASK_TOL
    mask64 = parse_mask(labels, np.float64)
    assert mask64.dtype == np.float64 and np.abs(mask64 - ref).max() <= MASK_TOL
    both = parse_mask(np.stack([labels, pipe_ref["fh_faceup_parse_argmax_u8"]]))
    assert both.shape == (2, 512, 512)
    np.testing.assert_array_equal(both[0], mask)
    # the border is zero and face/hair pixels far from an edge are ~1
    assert mask[:10].max() == 0 and mask[:, -10:].max() == 0
    assert 0.0 <= mask.min() and mask.max() <= 1.0


def test_parse_mask_keeps_face_and_hair_only():
    labels = np.zeros((512, 512), np.uint8)
    labels[128:384, 128:384] = 1  # skin
    mask = parse_mask(labels)
    assert mask[256, 256] > 0.999 and mask[20, 20] < 1e-6
    for dropped in (0, 14, 16, 17, 18):
        labels[128:384, 128:384] = dropped
        assert parse_mask(labels).max() == 0.0


def test_load_tolerates_missing_num_batches_tracked(tmp_path, filled_sd):
    slim = {k: v for k, v in filled_sd.items() if not k.endswith("num_batches_tracked")}
    assert len(slim) < len(filled_sd)
    torch.save(slim, tmp_path / "slim.pth")
    net = load_parsenet(tmp_path / "slim.pth")
    assert not net.training
    torch.testing.assert_close(net.state_dict()["body.3.conv2.conv2d.weight"], filled_sd["body.3.conv2.conv2d.weight"],
                               rtol=0, atol=0)
    broken = dict(slim)
    del broken["decoder.1.conv1.norm.norm.running_var"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_parsenet(tmp_path / "broken.pth")


def test_offline_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    monkeypatch.delenv("CODEFORMER_PARSENET", raising=False)
    with pytest.raises(weights.WeightsError) as err:
        load_parsenet()
    message = str(err.value)
    assert "\n" not in message and "parsing_parsenet.pth" in message
    assert f"put it at {tmp_path / 'weights' / 'parsing_parsenet.pth'}" in message


def _tiny_parsenet() -> ParseNet:
    torch.manual_seed(0)
    net = ParseNet(in_size=64, out_size=64, parsing_ch=19, min_feat_size=16, base_ch=8, res_depth=2,
                   ch_range=(8, 16))
    return net.eval()


def test_preprocess_is_the_official_one():
    rng = np.random.default_rng(1)
    face = rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)
    x = preprocess([face], 64)
    resized = cv2.resize(face, (64, 64), interpolation=cv2.INTER_LINEAR)
    expected = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].permute(1, 2, 0).numpy(), expected)  # channel 0 stays R


def test_parse_batches_equal_single_faces():
    net = _tiny_parsenet()
    rng = np.random.default_rng(2)
    faces = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 64, 3), (90, 75, 3), (64, 64, 3)]]
    batched = parse(net, faces, batch_size=2)
    assert batched.shape == (3, 64, 64) and batched.dtype == np.uint8
    for face, labels in zip(faces, batched, strict=True):
        np.testing.assert_array_equal(parse(net, face)[0], labels)
    np.testing.assert_array_equal(parse_logits(net, faces).argmax(1).numpy(), batched)
    np.testing.assert_array_equal(parse(net, np.stack([faces[0], faces[2]])), batched[[0, 2]])


def test_parse_rejects_non_rgb_uint8():
    net = _tiny_parsenet()
    with pytest.raises(ValueError, match="RGB uint8"):
        parse(net, np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        parse(net, [np.zeros((64, 64), np.uint8)])
