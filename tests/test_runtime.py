"""Inference runtime: precision modes and device selection (tiny model)."""

from __future__ import annotations

import pytest
import torch

from codeformer.models.codeformer import CodeFormer
from codeformer.runtime import TorchRunner, pick_device
from tests.conftest import TINY_CODEFORMER


def test_bf16_keeps_codes_in_fp32_and_stays_close():
    torch.manual_seed(0)
    model = CodeFormer(**TINY_CODEFORMER).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()  # codes far apart, as in a trained codebook
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref = model.restore(x, 0.5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, 0.5, adain_latent=True)
    assert out.logits.dtype == torch.float32  # the transformer runs in fp32 even under autocast
    fast = TorchRunner(model, "cpu", "bf16", channels_last=False).restore(x, 0.5)
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    assert float((fast - ref).abs().max()) > 1e-3  # bf16 really ran (its accuracy is measured in benchmarks/)
    # encoder and codes in fp32, only the decoder under autocast
    with torch.inference_mode():
        p = model.predict_latent(x, adain_latent=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decoded = model.decode(p.latent, p.skips, 0.5)
    assert torch.equal(fast, decoded.float())
    assert float((fast - ref).abs().mean()) < 0.05


def test_fp32_runner_equals_model():
    torch.manual_seed(0)
    model = CodeFormer(**TINY_CODEFORMER).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    ref = model.restore(x, 0.7)
    assert torch.allclose(TorchRunner(model, "cpu", "fp32").restore(x, 0.7), ref, atol=1e-5)


def test_bad_precision_and_device():
    with pytest.raises(ValueError, match="precision"):
        TorchRunner(CodeFormer(**TINY_CODEFORMER), "cpu", "int8")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")


def test_load_face_model_applies_precision(filled_checkpoint):
    from codeformer.backends import load_face_model

    runner, info = load_face_model("torch", str(filled_checkpoint("codeformer")), precision="bf16")
    assert isinstance(runner, TorchRunner) and runner.precision == "bf16" and info["precision"] == "bf16"
    with pytest.raises(ValueError, match="torch runtime only"):
        load_face_model("onnx", str(filled_checkpoint("codeformer")), precision="bf16")
