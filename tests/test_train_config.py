"""Training configs: shipped YAML files parse, unknown keys fail loudly, the stage-3 schedule is the official one."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeformer.config import ConfigError, Stage3Config, load_yaml
from codeformer.train.setup import apply_overrides, load_stage_config
from codeformer.train.stage3 import phase_at
from tests.train_support import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path):
    cfg = load_stage_config(path)
    assert cfg.stage in (1, 2, 3)
    # the variant models reuse a stage's step: colorization is stage II, inpainting stage III (issue 16)
    variant_stage = {"colorization": 2, "inpainting": 3}
    assert f"stage{cfg.stage}" in path.name or variant_stage[path.stem.removeprefix("tiny-")] == cfg.stage


def test_unknown_key_names_file_and_key(tmp_path: Path):
    text = (CONFIGS / "tiny-stage1.yaml").read_text().replace("run: {", "run: {learning_rate_typo: 3, ")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_stage_config(bad)
    assert str(bad) in str(err.value) and "learning_rate_typo" in str(err.value)


def test_unknown_top_level_key_and_bad_stage(tmp_path: Path):
    bad = tmp_path / "top.yaml"
    bad.write_text("stage: 2\nvqgan_path: x.pth\nwarmup: 5\n")
    with pytest.raises(ConfigError, match=r"top\.yaml.*warmup"):
        load_stage_config(bad)
    bad.write_text("stage: 4\n")
    with pytest.raises(ConfigError, match="stage"):
        load_stage_config(bad)


def test_official_values_in_full_configs():
    s1, s2, s3 = (load_stage_config(CONFIGS / f"stage{i}.yaml") for i in (1, 2, 3))
    assert (s1.optim_g.lr, s1.optim_g.eta_min, s1.optim_g.period, s1.run.iterations) == (7e-5, 6e-5, 1_600_000,
                                                                                          1_600_000)
    assert (s1.losses.gan_scale, s1.losses.d_start, s1.run.ema_decay) == (0.8, 30001, 0.995)
    assert (s2.optim.lr, s2.optim.milestones, s2.optim.gamma, s2.run.iterations) == (1e-4, (400_000, 450_000),
                                                                                     0.5, 500_000)
    assert (s2.losses.cross_entropy, s2.losses.latent_l2, s2.data.degradations) == (0.5, 1.0, ("large",))
    assert (s3.optim_g.lr, s3.optim_g.eta_min, s3.losses.gan_scale, s3.losses.d_start) == (5e-5, 2e-5, 0.1, 5001)
    assert (s3.run.ema_decay, s3.data.batch_size, s3.run.iterations) == (0.997, 3, 150_000)
    assert s1.optim_g.betas == s2.optim.betas == s3.optim_d.betas == (0.9, 0.99)


@pytest.mark.parametrize("step, expected", [
    (1, ("small", 1.0)), (40000, ("small", 1.0)), (40001, ("small", 1.3)), (80000, ("small", 1.3)),
    (80001, ("large", None)), (120000, ("large", None)), (120001, ("large", None)), (120015, ("small", 1.3)),
    (120016, ("large", None)), (150000, ("small", 1.3)),
])
def test_official_stage3_schedule(step: int, expected):
    phase = phase_at(Stage3Config(random_init=True).schedule, step)
    assert (phase.degradation, phase.w) == expected


def test_schedule_must_end_open_and_use_loaded_degradations(tmp_path: Path):
    with pytest.raises(ConfigError, match="last phase"):
        load_stage_config(CONFIGS / "tiny-stage3.yaml", ["schedule=[{until: 5, degradation: small, w: 1.0}]"])
    with pytest.raises(ConfigError, match="degradation"):
        load_stage_config(CONFIGS / "tiny-stage3.yaml", ["data.degradations=[small]"])


def test_overrides_and_effective_config_round_trip(tmp_path: Path):
    cfg = load_stage_config(CONFIGS / "tiny-stage2.yaml", ["run.iterations=7", "optim.lr=2e-3"])
    assert (cfg.run.iterations, cfg.optim.lr) == (7, 2e-3)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"], "x")
    from codeformer.config import Stage2Config, save_yaml
    save_yaml(cfg, tmp_path / "eff.yaml")
    assert load_yaml(Stage2Config, tmp_path / "eff.yaml") == cfg


def test_fp16_needs_cuda():
    import torch

    from codeformer.train.runtime import DistInfo, Stepper
    with pytest.raises(ConfigError, match="fp16"):
        Stepper(torch.device("cpu"), "fp16", DistInfo())
