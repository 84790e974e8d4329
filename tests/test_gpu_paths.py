"""The GPU code paths, checked on the CPU: out-of-memory fallback, fp16, torch.compile, device choice and the
onnxruntime providers. (The same code runs on CUDA; benchmarks/gpu.sh exercises it there.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.models.codeformer import CodeFormer
from codeformer.oom import BatchLimit, is_out_of_memory, run_in_chunks
from codeformer.runtime import TorchRunner, host_to_device, pick_device
from codeformer.serve.batcher import BatchingModel
from tests.conftest import TINY_CODEFORMER
from tests.face_helpers import ConvRestorer


class SmallCard(ConvRestorer):
    """`ConvRestorer` that runs out of memory above `fits` faces per call, like a GPU with little memory.
    `cuda` picks the error: torch.OutOfMemoryError (what CUDA raises) or a plain RuntimeError saying so."""

    def __init__(self, fits: int, cuda: bool = True) -> None:
        super().__init__()
        self.fits, self.cuda, self.tried = fits, cuda, []

    def restore(self, x: torch.Tensor, w: float | torch.Tensor, adain_latent: bool = True) -> torch.Tensor:
        self.tried.append(len(x))
        if len(x) > self.fits:
            if self.cuda:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")
        if isinstance(w, torch.Tensor):  # per-face w: a (B,) tensor
            w = w.view(-1, 1, 1, 1)
        return super().restore(x, w)


@pytest.mark.parametrize("cuda", [True, False])
def test_out_of_memory_halves_the_batch_and_goes_on(cuda: bool) -> None:
    crops = np.random.default_rng(0).random((7, 64, 64, 3), dtype=np.float32)  # any size: a stand-in model
    reference = Restorer(ConvRestorer()).restore_crops(crops, RestoreOptions(batch_size=1))
    card = SmallCard(fits=2, cuda=cuda)
    restorer = Restorer(card)
    out = restorer.restore_crops(crops, RestoreOptions(batch_size=8))
    np.testing.assert_allclose(out, reference, atol=1e-6)  # every face restored, in order
    assert card.tried[:3] == [7, 3, 1]  # 7 failed, then 3 failed, then 1 fitted
    assert max(card.tried[3:]) <= 1  # the limit is kept for the rest of the run
    assert restorer.batch_limit.size == 1 and len(restorer.batch_limit.notes) == 2
    assert "out of memory with 7 faces" in restorer.batch_limit.notes[0]
    again = restorer.restore_crops(crops[:2], RestoreOptions(batch_size=8))  # a later call starts at the limit
    assert card.tried[-2:] == [1, 1]
    np.testing.assert_allclose(again, reference[:2], atol=1e-6)


def test_out_of_memory_at_one_face_and_other_errors_are_raised() -> None:
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(torch.OutOfMemoryError):
        run_in_chunks(SmallCard(fits=0).restore, x, 0.5, BatchLimit())

    def broken(x: torch.Tensor, w: float) -> torch.Tensor:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM")

    limit = BatchLimit()
    with pytest.raises(RuntimeError, match="BAD_PARAM"):
        run_in_chunks(broken, torch.zeros(4, 3, 8, 8), 0.5, limit)
    assert limit.size is None and not limit.notes  # not mistaken for a memory error
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(ValueError("x"))


def test_batching_worker_splits_a_batch_with_per_face_w() -> None:
    card = SmallCard(fits=2)
    batcher = BatchingModel(card, max_batch=8)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    w = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    try:
        got = batcher.restore(x, w)
    finally:
        batcher.close()
    expected = torch.cat([ConvRestorer().restore(x[i:i + 1], float(w[i])) for i in range(5)])
    assert torch.allclose(got, expected, atol=1e-6)  # each face kept its own w through the split
    assert batcher.batch_limit.size == 2


def _tiny_model() -> CodeFormer:
    torch.manual_seed(0)
    model = CodeFormer(**TINY_CODEFORMER).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()  # codes far apart, as in a trained codebook
    return model


def test_fp16_runs_only_the_decoder_in_half_precision() -> None:
    model = _tiny_model()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref = model.restore(x, 0.5)
    fast = TorchRunner(model, "cpu", "fp16", channels_last=False).restore(x, 0.5)
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    with torch.inference_mode():
        p = model.predict_latent(x, adain_latent=True)  # fp32: the codes
        with torch.autocast("cpu", dtype=torch.float16):
            decoded = model.decode(p.latent, p.skips, 0.5)
    assert torch.equal(fast, decoded.float())  # exactly the per-part policy
    assert 1e-4 < float((fast - ref).abs().max()) and float((fast - ref).abs().mean()) < 0.02


def test_compiled_runner_equals_eager() -> None:
    # the "eager" backend runs what dynamo captured of our forward without generating kernels, so the capture is
    # checked in seconds; inductor itself (tens of seconds on a CPU) runs in benchmarks/gpu.py
    model = _tiny_model()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    eager = TorchRunner(model, "cpu", "fp32").restore(x, 0.7)
    compiled = TorchRunner(model, "cpu", "fp32", compile=True, compile_backend="eager")
    assert compiled.compiled
    assert torch.allclose(compiled.restore(x, 0.7), eager, atol=1e-5)
    assert torch.allclose(compiled.restore(x, 0.7), eager, atol=1e-5)  # the cached graph again
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        TorchRunner(model, "cpu", "bf16", compile=True, cuda_graphs=True)


def test_auto_device_and_host_copies() -> None:
    auto = pick_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert auto.type == expected
    x = torch.arange(6.0).view(2, 3)
    assert torch.equal(host_to_device(x, torch.device("cpu")), x)
    if torch.cuda.is_available():
        moved = host_to_device(x, torch.device("cuda"))
        assert moved.is_cuda and torch.equal(moved.cpu(), x)
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu")


def test_onnx_providers_prefer_tensorrt_then_cuda(monkeypatch, tmp_path) -> None:
    import onnxruntime as ort

    from codeformer import backends

    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    assert backends._providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="no CUDAExecutionProvider"):
            backends._providers("cuda")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider",
                                                                 "CUDAExecutionProvider", "CPUExecutionProvider"])
    chosen = backends._providers("cuda:1")
    assert [p if isinstance(p, str) else p[0] for p in chosen] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chosen[0][1]["device_id"] == chosen[1][1]["device_id"] == "1"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert backends._providers("cuda") == [("CUDAExecutionProvider", {"device_id": "0"}), "CPUExecutionProvider"]


def test_cli_device_errors_are_one_line_and_exit_2(tmp_path, capsys) -> None:
    from codeformer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["restore", "in.png", "-o", str(tmp_path), "--device", "tpu"])
    assert exc.value.code == 2 and "expected auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["restore", "in.png", "-o", str(tmp_path), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("codeformer restore: --device cuda:") and "no CUDA GPU" in err and "\n" not in err
        assert main(["evaluate", "--restored", str(tmp_path), "--device", "cuda:1"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_load_face_model_passes_compile_and_resolves_auto(filled_checkpoint) -> None:
    from codeformer.backends import load_face_model

    runner, info = load_face_model("torch", str(filled_checkpoint("codeformer")), device="auto", precision="fp16",
                                   compile=True)
    assert isinstance(runner, TorchRunner) and runner.compiled and runner.precision == "fp16"
    assert info["device"] == str(pick_device("auto")) and info["compile"] is True
    with pytest.raises(ValueError, match="torch runtime only"):
        load_face_model("onnx", str(filled_checkpoint("codeformer")), compile=True)
