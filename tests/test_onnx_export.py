"""ONNX export: w stays a graph input, the batch is dynamic, onnxruntime matches PyTorch (tiny model at
w ∈ {0, 0.5, 1} and a batch of 2; the parity kit's full-size filled weights against the official output)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from codeformer.cli import main
from codeformer.models.codeformer import CodeFormer
from codeformer.onnx_export import OnnxRestorer, check_onnx, export_onnx
from tests.conftest import TINY_CODEFORMER, to_input

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny() -> CodeFormer:
    torch.manual_seed(0)
    return CodeFormer(**TINY_CODEFORMER).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    return export_onnx(tiny, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_graph_has_w_and_batch_as_inputs(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {"image": ["batch", 3, 32, 32], "w": ["batch"]}
    assert [o.name for o in model.graph.output] == ["restored"]
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [17]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["codeformer.img_size"] == "32" and "non-commercial" in meta["codeformer.licence"]


def test_onnxruntime_matches_torch_at_three_w(tiny, tiny_onnx):
    diffs = check_onnx(tiny, tiny_onnx, ws=(0.0, 0.5, 1.0), batch=2)
    assert set(diffs) == {0.0, 0.5, 1.0}
    assert max(diffs.values()) <= TOL, diffs


def test_per_image_w_and_other_batch_sizes(tiny, tiny_onnx):
    runner = OnnxRestorer(tiny_onnx)
    assert runner.dynamic_batch and runner.img_size == 32
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    w = torch.tensor([0.0, 0.3, 1.0])
    got = runner.restore(x, w)
    for i in range(3):  # one graph call with a w per image ≡ torch image by image
        expected = tiny.restore(x[i:i + 1], float(w[i]))
        assert float((got[i:i + 1] - expected).abs().max()) <= TOL


def test_w_is_not_a_dead_knob(tiny_onnx):
    runner = OnnxRestorer(tiny_onnx)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert float((runner.restore(x, 0.0) - runner.restore(x, 1.0)).abs().max()) > 1e-3


def test_static_batch_export_runs_image_by_image(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "static.onnx", dynamic_batch=False)
    runner = OnnxRestorer(path)
    assert not runner.dynamic_batch
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert float((runner.restore(x, 0.5) - tiny.restore(x, 0.5)).abs().max()) <= TOL


def test_restorer_refuses_what_it_cannot_do(tiny_onnx, tmp_path):
    runner = OnnxRestorer(tiny_onnx)
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="AdaIN"):
        runner.restore(x, 0.5, adain_latent=False)
    with pytest.raises(ValueError, match="expected"):
        runner.restore(torch.zeros(1, 3, 64, 64), 0.5)
    # a graph without a w input (the hard-coded-w exports) is rejected loudly
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    out = helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["restored"])], "no_w", [image], [out])
    no_w = tmp_path / "no_w.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(no_w))
    with pytest.raises(ValueError, match="w"):
        OnnxRestorer(no_w)


def test_unknown_exporter_and_failed_write_leave_nothing(tiny, tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(tiny, tmp_path / "x.onnx", exporter="magic")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_size_export_matches_official_output(filled_checkpoint, parity_ref, tmp_path, capsys):
    """`codeformer export-onnx` on the parity kit's filled weights (the released layout, 94 M parameters);
    onnxruntime must reproduce the official network's output at w = 0.5 within the kit's image tolerance."""
    out = tmp_path / "codeformer.onnx"
    assert main(["export-onnx", str(out), "--weights", str(filled_checkpoint("codeformer")), "--no-check"]) == 0
    assert "w (B,)" in capsys.readouterr().out
    runner = OnnxRestorer(out, threads=2)
    x = to_input(parity_ref["input_rgb_u8"])
    got = runner.restore(x, 0.5).numpy()
    assert np.abs(got - parity_ref["cf_out_w05"]).max() <= TOL


def scaling_graph(path) -> None:
    """A stand-in 512 px graph with the exported interface: restored = image · (1 − w/2), w per image."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 512, 512])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["batch"])
    out = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["batch", 3, 512, 512])
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [4],
                                                                               [-1, 1, 1, 1])),
        helper.make_node("Constant", [], ["half"], value=helper.make_tensor("h", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Reshape", ["w", "shape"], ["w4"]),
        helper.make_node("Mul", ["w4", "half"], ["hw"]),
        helper.make_node("Mul", ["image", "hw"], ["cut"]),
        helper.make_node("Sub", ["image", "cut"], ["restored"]),
    ]
    graph = helper.make_graph(nodes, "scale", [image, w], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_restore_cli_runtime_onnx_passes_w_to_the_graph(tmp_path):
    from PIL import Image

    graph = tmp_path / "scale.onnx"
    scaling_graph(graph)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "face.png")
    base = ["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "--aligned", "--no-progress", "-w", "1"]
    assert main(base + ["--runtime", "onnx", "--onnx", str(graph)]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    # w = 1 halves the image in [-1, 1]: p ↦ p/2 + 64 in 8-bit (200 → 164)
    assert abs(int(out.mean().round()) - 164) <= 1
    assert main(base + ["--onnx", str(graph)]) == 2  # --onnx without --runtime onnx
    assert main(base + ["--runtime", "onnx", "--onnx", str(tmp_path / "missing.onnx")]) == 1


def test_serve_cli_builds_the_app_on_onnxruntime(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from PIL import Image

    import codeformer.serve.server as server

    graph = tmp_path / "scale.onnx"
    scaling_graph(graph)
    started = {}
    monkeypatch.setattr(server, "run", lambda app, host, port: started.update(app=app, host=host, port=port))
    assert main(["serve", "--runtime", "onnx", "--onnx", str(graph), "--max-mb", "1"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 7860)
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, format="PNG")
    with TestClient(started["app"]) as client:
        model = client.get("/v1/models").json()["models"][0]
        assert model["runtime"] == "onnx" and model["w_input"] is True and model["weights"] == str(graph)
        res = client.post("/v1/restore", files={"image": ("f.png", buf.getvalue())},
                          data={"aligned": "true", "w": "1"}, headers={"Accept": "image/png"})
        assert res.status_code == 200
        assert abs(int(np.asarray(Image.open(io.BytesIO(res.content))).mean().round()) - 164) <= 1
        assert client.post("/v1/restore", files={"image": ("f.png", b"x" * (2 << 20))}).status_code == 413


def test_runtime_onnx_exports_once_into_the_cache_per_weight_file(tmp_path, monkeypatch):
    import codeformer.checkpoint as checkpoint
    import codeformer.onnx_export as onnx_export
    from codeformer.backends import load_face_model

    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "home"))
    exported: list[str] = []
    monkeypatch.setattr(checkpoint, "load_codeformer", lambda path: f"model of {path.name}")

    def fake_export(model: str, target) -> None:
        exported.append(model)
        target.parent.mkdir(parents=True, exist_ok=True)
        scaling_graph(target)

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    model, info = load_face_model("onnx", str(first))
    assert isinstance(model, OnnxRestorer) and info["runtime"] == "onnx" and info["w_input"] is True
    assert load_face_model("onnx", str(first))[1]["weights"] == info["weights"]  # cached: no second export
    assert exported == ["model of a.pth"]
    other = load_face_model("onnx", str(second))[1]["weights"]
    assert other != info["weights"] and exported == ["model of a.pth", "model of b.pth"]  # new weights, new graph
    with pytest.raises(ValueError, match="runtime"):
        load_face_model("tensorrt")
