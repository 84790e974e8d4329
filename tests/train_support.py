"""Helpers for the training tests: tiny face folders, tiny stage configs, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.tiny_faces import make_tiny_faces
from codeformer.train.setup import load_stage_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads per process oversubscribe badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_faces(folder: Path, n_lfw: int = 14) -> Path:
    """A folder of 2 + n_lfw small face crops (photos and LFW), made once per folder."""
    if not folder.is_dir():
        make_tiny_faces(folder, n_lfw=n_lfw, size=32)
    return folder


def tiny_config(stage: int, faces: Path, out: Path, *overrides: str):
    """configs/tiny-stage{stage}.yaml pointed at `faces` and `out`, plus `key=value` overrides."""
    return load_stage_config(CONFIGS / f"tiny-stage{stage}.yaml",
                             [f"data.root={faces}", f"run.out_dir={out}", *overrides])
