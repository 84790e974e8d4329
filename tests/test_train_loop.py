"""The shared loop: exact resume, two-process gloo DDP, EMA and LR schedules, the train and codes commands."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from codeformer.checkpoint import read_state_dict, save_state_dict
from codeformer.cli import main
from codeformer.config import OptimConfig
from codeformer.data.dataset import FaceFolderDataset
from codeformer.models.vqgan import VQAutoEncoder
from codeformer.train.loop import find_checkpoint, list_checkpoints, train
from codeformer.train.runtime import EMA, lr_factor
from tests.train_support import CONFIGS, one_thread, tiny_config, tiny_faces  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
# GAN and D from step 2, so resume and DDP cover both optimizers
STAGE1 = ("losses.d_start=2", "run.log_every=1")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return tiny_faces(tmp_path_factory.mktemp("faces") / "faces")


def _state(out: Path, step: int) -> dict:
    return torch.load(out / "checkpoints" / f"step_{step:06d}" / "state.pt", weights_only=True)


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_resume_is_bit_identical(faces, tmp_path):
    # 16 faces, batch 4: 4 steps per epoch; N = 3 stops mid-epoch and 2N crosses an epoch boundary
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(1, faces, straight, *STAGE1, "run.iterations=6", "run.checkpoint_every=6"), progress=False)
    train(tiny_config(1, faces, split, *STAGE1, "run.iterations=3", "run.checkpoint_every=3"), progress=False)
    cfg = tiny_config(1, faces, split, *STAGE1, "run.iterations=6", "run.checkpoint_every=6")
    train(cfg, resume=split, progress=False)
    a, b = _state(straight, 6), _state(split, 6)
    for key in ("modules", "ema", "optimizers", "schedulers", "step"):
        _assert_same(a[key], b[key], key)
    _assert_same(read_state_dict(straight / "net_g_ema.pth"), read_state_dict(split / "net_g_ema.pth"))
    rows = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert find_checkpoint(split).name == "step_000006"
    assert (split / "checkpoints" / "step_000003" / "config.yaml").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, faces: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = tiny_config(1, Path(faces), Path(out), *STAGE1, "run.iterations=3", "run.checkpoint_every=3",
                      "data.batch_size=2")
    result = train(cfg, progress=False)
    modules = {k: m.state_dict() for k, m in result.state.parts.modules.items()}
    torch.save({"modules": modules, "ema": result.state.ema.shadow}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_two_gloo_processes_stay_in_sync(faces, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(faces), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    _assert_same(r0["modules"], r1["modules"])
    _assert_same(r0["ema"], r1["ema"])
    assert (tmp_path / "checkpoints" / "step_000003" / "state.pt").is_file()  # rank 0 saved
    start = VQAutoEncoder.from_config(tiny_config(1, faces, tmp_path).model)
    assert any(not torch.equal(v, start.state_dict()[k]) for k, v in r0["modules"]["net_g"].items())


def test_ema_rule_and_schedules():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net)
    old = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 0.9)
    assert torch.allclose(ema.shadow["weight"], 0.9 * old["weight"] + 0.1 * net.weight)
    cos = OptimConfig(lr=7e-5, schedule="cosine", period=100, eta_min=6e-5)
    assert lr_factor(cos, 0) == 1.0 and math.isclose(lr_factor(cos, 100) * 7e-5, 6e-5)
    assert math.isclose(lr_factor(cos, 50) * 7e-5, 6.5e-5) and lr_factor(cos, 500) == lr_factor(cos, 100)
    multi = OptimConfig(schedule="multistep", milestones=(10, 20), gamma=0.5)
    assert [lr_factor(multi, s) for s in (9, 10, 19, 20)] == [1.0, 0.5, 0.5, 0.25]


def test_cli_train_then_resume(faces, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "tiny-stage1.yaml"), "--out", str(out), "--no-progress",
            "--set", f"data.root={faces}", "--set", "run.iterations=2", "--set", "run.checkpoint_every=1",
            "--device", "cpu"]
    assert main(args) == 0
    assert "net_g_ema.pth" in capsys.readouterr().err
    assert "device: cpu" in (out / "checkpoints" / "step_000001" / "config.yaml").read_text()  # --device applied
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    (out / "checkpoints" / "step_000009.tmp").mkdir()  # an unfinished save is never resumed from
    assert main(["train", "--resume", str(out), "--no-progress", "--set", "run.iterations=3",
                 "--set", "run.keep_checkpoints=1"]) == 0
    assert find_checkpoint(out).name == "step_000003"
    assert [p.name for p in list_checkpoints(out)] == ["step_000003"]  # older ones pruned
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err


def test_cli_codes_match_the_vqgan(faces, tmp_path):
    cfg = tiny_config(1, faces, tmp_path)
    torch.manual_seed(0)
    vqgan = VQAutoEncoder.from_config(cfg.model).eval()
    save_state_dict(vqgan.state_dict(), tmp_path / "vq.pth")
    codes = tmp_path / "codes.safetensors"
    assert main(["codes", "--vqgan", str(tmp_path / "vq.pth"), "--data", str(faces), "-o", str(codes),
                 "--config", str(CONFIGS / "tiny-stage1.yaml"), "--no-progress"]) == 0
    ds = FaceFolderDataset(faces, size=32, flip=True, seed=3, codes_path=codes)
    for i in range(4):
        item = ds[i]
        with torch.no_grad():
            expected = vqgan.encode(item["hq"][None]).indices.flatten()
        assert torch.equal(item["codes"], expected), (i, item["flipped"])


def test_stage2_trains_from_precomputed_codes(faces, tmp_path):
    cfg1 = tiny_config(1, faces, tmp_path)
    torch.manual_seed(1)
    save_state_dict(VQAutoEncoder.from_config(cfg1.model).state_dict(), tmp_path / "vq.pth")
    codes = tmp_path / "codes.pth"
    assert main(["codes", "--vqgan", str(tmp_path / "vq.pth"), "--data", str(faces), "-o", str(codes),
                 "--config", str(CONFIGS / "tiny-stage1.yaml"), "--no-progress"]) == 0
    cfg = tiny_config(2, faces, tmp_path / "run", f"vqgan_path={tmp_path / 'vq.pth'}", f"data.codes_path={codes}",
                      "run.iterations=2")
    result = train(cfg, progress=False)
    assert result.state.parts.step.args[0].hq_vqgan is None  # no VQGAN forward in the step
    rows = [json.loads(x) for x in (result.out / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and math.isfinite(rows[-1]["cross_entropy"])


def test_stepper_clips_the_global_gradient_norm():
    from codeformer.train.runtime import DistInfo, Stepper

    net = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    norms = []
    step = opt.step

    def recording_step(*a, **k):
        norms.append(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()])).item())
        return step(*a, **k)

    opt.step = recording_step
    stepper = Stepper(torch.device("cpu"), "fp32", DistInfo())
    stepper.optimize((net(torch.full((4, 8), 100.0)) ** 2).sum(), opt, grad_clip=0.5)
    stepper.optimize((net(torch.full((4, 8), 100.0)) ** 2).sum(), opt, grad_clip=None)
    assert math.isclose(norms[0], 0.5, rel_tol=1e-4) and norms[1] > 1.0
    assert all(p.grad is None for p in net.parameters())  # zeroed after the step
