"""Training the colorization and inpainting models (tiny configs on CPU): the right inputs, the official losses
and schedule, and the loss goes down."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codeformer.config import ConfigError
from codeformer.train.loop import batches, build_state, train
from codeformer.train.runtime import DistInfo
from codeformer.train.setup import build_dataset, load_stage_config
from tests.train_support import CONFIGS, one_thread, tiny_faces  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def variant_config(name: str, faces: Path, out: Path, *overrides: str):
    """configs/tiny-<name>.yaml on `faces`, writing to `out`, with a random VQGAN (no tiny stage-1 run needed)."""
    return load_stage_config(CONFIGS / f"tiny-{name}.yaml", [f"data.root={faces}", f"run.out_dir={out}",
                                                            "vqgan_path=null", "random_init=true", *overrides])


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return tiny_faces(tmp_path_factory.mktemp("faces") / "faces")


def test_full_variant_configs_carry_the_official_values() -> None:
    colour = load_stage_config(CONFIGS / "colorization.yaml")
    assert (colour.stage, colour.degradation, colour.data.degradations) == (2, "colorization", ("colorization",))
    assert (colour.optim.lr, colour.optim.milestones, colour.run.iterations, colour.run.ema_decay) == (
        1e-4, (400_000, 450_000), 500_000, 0.995)
    assert (colour.losses.cross_entropy, colour.losses.latent_l2, colour.data.batch_size) == (0.5, 1.0, 4)
    inpaint = load_stage_config(CONFIGS / "inpainting.yaml")
    assert inpaint.stage == 3 and inpaint.init_from == "vqgan" and inpaint.codeformer_path is None
    assert [(p.until, p.degradation, p.w) for p in inpaint.schedule] == [(None, "inpainting", 1.0)]
    assert (inpaint.optim_g.lr, inpaint.optim_g.milestones, inpaint.optim_d.lr) == (7e-5, (250_000, 300_000), 7e-5)
    assert (inpaint.losses.gan_scale, inpaint.losses.d_start, inpaint.losses.cross_entropy,
            inpaint.losses.latent_l2, inpaint.losses.l1, inpaint.losses.perceptual) == (0.1, 296001, 0.5, 1.0, 1, 1)
    assert (inpaint.run.iterations, inpaint.run.ema_decay, inpaint.data.batch_size) == (300_000, 0.997, 3)
    assert inpaint.model.connect_list == colour.model.connect_list == (32, 64, 128)


def test_variant_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_from 'vqgan'.*codeformer_path"):
        load_stage_config(CONFIGS / "inpainting.yaml", ["codeformer_path=x.pth"])
    with pytest.raises(ConfigError, match="init_from"):
        load_stage_config(CONFIGS / "inpainting.yaml", ["init_from=stage2"])
    with pytest.raises(ConfigError, match="degradation 'large'.*data.degradations"):
        load_stage_config(CONFIGS / "colorization.yaml", ["degradation=large"])
    with pytest.raises(ConfigError, match="brush_widths"):
        load_stage_config(CONFIGS / "tiny-inpainting.yaml", ["data.brush_widths=[1, 2]"])


def test_inpainting_batches_are_white_stroked_clean_faces(faces: Path, tmp_path: Path) -> None:
    cfg = variant_config("inpainting", faces, tmp_path)
    _, batch = next(batches(build_dataset(cfg.data, 0), cfg.data, DistInfo(), 0, 0, 1))
    lq, hq = batch["lq_inpainting"], batch["hq"]
    hole = (lq == 1.0).all(dim=1)  # (B, S, S): pure white in [-1, 1]
    assert 0.01 < hole.float().mean() < 0.8
    # everywhere else the LQ input is the HQ face, rounded to 8 bits
    keep = ~hole[:, None].expand_as(lq)
    assert (lq[keep] - hq[keep]).abs().max() <= 1.0 / 255 + 1e-6


def test_tiny_colorization_learns(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "colour"
    train(variant_config("colorization", faces, out, "run.iterations=60", "run.log_every=10"), progress=False)
    log = rows(out)
    # a random VQGAN's codes are close to uniform, so the cross-entropy can only creep down (measured 3.39 → 3.21
    # over 60 steps); the latent L2 to the target codes falls by about 10×
    assert log[-1]["cross_entropy"] < log[0]["cross_entropy"] - 0.05, [r["cross_entropy"] for r in log]
    assert log[-1]["latent_l2"] < 0.3 * log[0]["latent_l2"], [r["latent_l2"] for r in log]
    assert all("l1" not in r for r in log)  # code prediction only (w = 0): no pixel loss
    assert (out / "net_g_ema.pth").is_file()


def test_tiny_inpainting_learns_at_w_1_with_the_gan_late(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "inpaint"
    train(variant_config("inpainting", faces, out, "run.log_every=1"), progress=False)
    log = rows(out)
    assert [r["w"] for r in log] == [1.0] * 40
    assert all(("d_loss" in r) == (r["step"] >= 31) for r in log)  # losses.d_start 31
    l1 = [r["l1"] for r in log]
    first, last = float(np.mean(l1[:5])), float(np.mean(l1[-5:]))
    assert last < 0.8 * first, f"L1 {first:.3f} → {last:.3f}"
    assert (out / "net_g_ema.pth").is_file() and (out / "net_d.pth").is_file()


def test_inpainting_starts_from_the_vqgan(faces: Path, tmp_path: Path) -> None:
    cfg = variant_config("inpainting", faces, tmp_path)
    st = build_state(cfg, torch.device("cpu"), DistInfo())
    model, vqgan = st.parts.modules["net_g"], st.parts.step.args[0].hq_vqgan
    theirs = vqgan.state_dict()
    shared = [k for k in model.state_dict() if k.startswith(("encoder.", "quantize.", "generator."))]
    assert shared and all(torch.equal(model.state_dict()[k], theirs[k]) for k in shared)
    assert not any(p.requires_grad for p in model.generator.parameters())  # frozen, as in stage 3
    assert not model.quantize.embedding.weight.requires_grad
