"""Stage steps on tiny configs (CPU): gradient routing, learning, and the stage-3 w schedule.

The learning tests chain like the real recipe: a tiny stage-1 run gives the VQGAN for stage 2, and both give
the weights for stage 3 (module-scoped fixtures, so each run happens once).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codeformer.checkpoint import read_state_dict
from codeformer.models.codeformer import CodeFormer
from codeformer.train.loop import batches, build_state, train
from codeformer.train.runtime import DistInfo
from codeformer.train.setup import build_dataset, frozen_vqgan
from tests.train_support import one_thread, tiny_config, tiny_faces  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _step_recording(cfg, step: int = 1):
    """Build the stage, run iteration `step` on the first batch; return (state, state dicts before, names of the
    parameters that had a gradient at each optimizer step)."""
    st = build_state(cfg, CPU, DistInfo())
    seen: dict[str, set[str]] = {}
    for name, opt in st.parts.optimizers.items():
        module = st.parts.modules[name]
        ids = {id(p): k for k, p in module.named_parameters()}
        seen[name] = set()

        def wrapped(*a, _opt=opt, _ids=ids, _seen=seen[name], _step=opt.step, **k):
            _seen.update(_ids[id(p)] for g in _opt.param_groups for p in g["params"]
                         if p.grad is not None)
            return _step(*a, **k)

        opt.step = wrapped
    before = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in st.parts.modules.items()}
    _, batch = next(batches(build_dataset(cfg.data, 0), cfg.data, DistInfo(), 0, 0, 1))
    st.parts.step(batch, step, st.stepper)
    return st, before, seen


def _changed(st, before, name: str) -> set[str]:
    now = st.parts.modules[name].state_dict()
    return {k for k, v in now.items() if not torch.equal(v, before[name][k])}


def _params_under(module: torch.nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {k for k, _ in module.named_parameters() if k.startswith(prefixes)}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return tiny_faces(tmp_path_factory.mktemp("faces") / "faces")


def test_stage1_routing(faces, tmp_path):
    cfg = tiny_config(1, faces, tmp_path, "losses.d_start=1", "losses.perceptual=1.0")
    st, before, seen = _step_recording(cfg)
    g, d = st.parts.modules["net_g"], st.parts.modules["net_d"]
    assert seen["net_g"] == {k for k, _ in g.named_parameters()}  # encoder, codebook, generator: all
    assert seen["net_d"] == {k for k, _ in d.named_parameters()}
    assert _changed(st, before, "net_g") == seen["net_g"]


def test_stage2_routing(faces, tmp_path):
    cfg = tiny_config(2, faces, tmp_path, "vqgan_path=null", "random_init=true")
    st, before, seen = _step_recording(cfg)
    model = st.parts.modules["net_g"]
    trainable = _params_under(model, ("encoder.", "position_emb", "feat_emb.", "ft_layers.", "idx_pred_layer."))
    assert seen["net_g"] == trainable
    assert _changed(st, before, "net_g") == trainable  # quantize, generator, fusion bit-identical
    frozen = _params_under(model, ("quantize.", "generator.", "fuse_convs_dict."))
    assert frozen and not any(p.requires_grad for k, p in model.named_parameters() if k in frozen)


@pytest.mark.parametrize("step, code_only", [(1, False), (21, True)])
def test_stage3_routing(faces, tmp_path, step: int, code_only: bool):
    cfg = tiny_config(3, faces, tmp_path, "codeformer_path=null", "discriminator_path=null", "vqgan_path=null",
                      "random_init=true", "losses.d_start=1", "losses.perceptual=1.0")
    st, before, seen = _step_recording(cfg, step)
    model = st.parts.modules["net_g"]
    transformer = _params_under(model, ("encoder.", "position_emb", "feat_emb.", "ft_layers.", "idx_pred_layer."))
    fusion = _params_under(model, ("fuse_convs_dict.",))
    expected = transformer if code_only else transformer | fusion
    assert seen["net_g"] == expected
    assert _changed(st, before, "net_g") == expected  # quantize and generator bit-identical
    d_changed = _changed(st, before, "net_d")
    assert (not d_changed) if code_only else d_changed  # no D update on code-only iterations


@pytest.fixture(scope="module")
def stage1_run(faces, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stage1")
    train(tiny_config(1, faces, out, "run.iterations=100", "run.log_every=5", "run.checkpoint_every=100"),
          progress=False)
    return out


@pytest.mark.slow
def test_stage1_learns(stage1_run):
    rows = _rows(stage1_run)
    first, last = rows[0]["l1"], rows[-1]["l1"]
    assert last <= 0.5 * first, f"L1 {first:.3f} → {last:.3f}"
    assert (stage1_run / "loss_curve.png").is_file() and (stage1_run / "net_g_ema.pth").is_file()
    assert (stage1_run / "checkpoints" / "step_000100" / "config.yaml").is_file()


@pytest.fixture(scope="module")
def stage2_run(faces, stage1_run, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stage2")
    train(tiny_config(2, faces, out, f"vqgan_path={stage1_run / 'net_g_ema.pth'}", "run.iterations=100",
                      "run.checkpoint_every=100"), progress=False)
    return out


@pytest.mark.slow
def test_stage2_beats_chance_and_nearest_code(faces, stage1_run, stage2_run):
    cfg = tiny_config(2, faces, stage2_run, f"vqgan_path={stage1_run / 'net_g_ema.pth'}")
    model = CodeFormer.from_config(cfg.model)
    model.load_state_dict(read_state_dict(stage2_run / "net_g_ema.pth"))
    hq_vqgan = frozen_vqgan(cfg.model.vqgan, cfg.vqgan_path, CPU)
    dataset = build_dataset(cfg.data, cfg.run.seed)
    items = [dataset[i] for i in range(len(dataset))]  # the training crops (epoch 0 degradations)
    with torch.no_grad():
        target = hq_vqgan.encode(torch.stack([it["hq"] for it in items])).indices.flatten(1)
        logits, lq_feat = model.predict_codes(torch.stack([it["lq_large"] for it in items]))
        acc = (logits.argmax(-1) == target).float().mean().item()
        nearest = (model.quantize(lq_feat).indices.flatten(1) == target).float().mean().item()
    chance = 1.0 / cfg.model.vqgan.codebook_size
    assert acc > 5 * chance and acc > nearest + 0.1, f"accuracy {acc:.3f}, nearest code {nearest:.3f}"


@pytest.mark.slow
def test_stage3_follows_schedule(faces, stage1_run, stage2_run, tmp_path):
    out = tmp_path / "stage3"
    cfg = tiny_config(3, faces, out, f"codeformer_path={stage2_run / 'net_g_ema.pth'}",
                      f"discriminator_path={stage1_run / 'net_d.pth'}",
                      f"vqgan_path={stage1_run / 'net_g_ema.pth'}", "run.iterations=36")
    train(cfg, progress=False)
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, 37))
    expected = [1.0] * 10 + [1.3] * 10 + [None] * 10 + [1.3 if s % 3 == 0 else None for s in range(31, 37)]
    assert [r["w"] for r in rows] == expected
    assert all(("l1" in r) == (r["w"] is not None) for r in rows)  # code-only steps have no pixel loss
    assert all(("d_loss" in r) == (r["w"] is not None and r["step"] >= 6) for r in rows)
    assert (out / "net_g_ema.pth").is_file() and (out / "net_d.pth").is_file()


@pytest.mark.parametrize("stage", [1, 2])
def test_bf16_autocast_step_on_cpu(faces, tmp_path, stage: int):
    extra = ("losses.d_start=1",) if stage == 1 else ("vqgan_path=null", "random_init=true")
    cfg = tiny_config(stage, faces, tmp_path, "run.precision=bf16", *extra)
    st = build_state(cfg, CPU, DistInfo())
    _, batch = next(batches(build_dataset(cfg.data, 0), cfg.data, DistInfo(), 0, 0, 1))
    metrics = st.parts.step(batch, 1, st.stepper)
    assert all(v is None or torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in st.parts.modules["net_g"].parameters())  # fp32 master weights
