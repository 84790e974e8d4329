"""Shared fixtures: paths to ../shared, tiny model configs, and the parity kit's filled weights."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PARITY = SHARED / "parity"
DATA = SHARED / "data"

# Tiny configs: the same architecture with fewer, narrower blocks (GroupNorm needs multiples of 32 channels).
TINY_VQGAN = dict(img_size=32, nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(8,), codebook_size=16,
                  emb_dim=32)
TINY_CODEFORMER = dict(dim_embd=32, n_head=4, n_layers=2, codebook_size=16, latent_size=64, connect_list=(16, 32),
                       img_size=32, nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(8,), emb_dim=32)


# CODEFORMER_TEST_DEVICE=cuda (or cuda:N, mps) runs the parity, pipeline, video and serve tests' networks on that
# device; unset, everything runs on the CPU as in CI. A device that is asked for but missing fails the tests
# that use it (never a skip).
TEST_DEVICE = os.environ.get("CODEFORMER_TEST_DEVICE", "cpu")
# Largest |output - official reference| accepted for the full-size network in fp32. CPU: the parity kit's
# tolerances (same kernels, 2 threads). CUDA: cuDNN sums in other orders (TF32 is off: `TorchRunner` and
# `fp32_on` turn it off), which over ~50 convolutions was expected to stay under 1e-3 (the goal);
# not yet measured on a GPU here.
# "stats": BatchNorm running statistics after one training-mode pass.
PARITY_TOLERANCE = {"cpu": {"image": 1e-4, "logit": 2e-4, "stats": 1e-5},
                    "cuda": {"image": 1e-3, "logit": 2e-3, "stats": 1e-4},
                    "mps": {"image": 1e-3, "logit": 2e-3, "stats": 1e-4}}


def fp32_on(device: torch.device) -> None:
    """Plain fp32 convolutions and matmuls on CUDA (cuDNN's TF32 default would cost ~3 decimal digits)."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(scope="session")
def test_device() -> torch.device:
    """The device of $CODEFORMER_TEST_DEVICE (default cpu), checked to exist."""
    from codeformer.runtime import pick_device

    device = pick_device(TEST_DEVICE)
    fp32_on(device)
    return device


@pytest.fixture(scope="session")
def parity_tol(test_device: torch.device) -> dict[str, float]:
    """{"image": ..., "logit": ..., "stats": ...}: the parity tolerances for the test device."""
    return PARITY_TOLERANCE[test_device.type]


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)  # the parity reference was computed with 2 threads


@pytest.fixture
def one_thread(_two_threads):
    """One thread for tests of many small convolutions (the pipeline kit's ParseNet and RRDBNet): two OpenMP threads
    on a loaded 2-core machine wait on each other (measured: the tile-64 case 227 s wall with 2 threads, 12 s with 1,
    same CPU time). The kit's outputs are identical for 1 and 2 threads (its README, "Tolerances")."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def pipe_ref() -> dict[str, np.ndarray]:
    """The pipeline kit's reference arrays (`../shared/parity/pipeline/reference_pipeline.npz`)."""
    with np.load(PARITY / "pipeline" / "reference_pipeline.npz") as z:
        return {k: z[k] for k in z.files}


def _fill_module():
    spec = importlib.util.spec_from_file_location("fill_weights", PARITY / "fill_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def parity_ref() -> dict[str, np.ndarray]:
    with np.load(PARITY / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def parity_meta() -> dict:
    return json.loads((PARITY / "reference.json").read_text())


@pytest.fixture(scope="session")
def filled_checkpoint(tmp_path_factory, parity_meta):
    """Return a function model name → path of the filled weights saved in the official .pth layout."""
    fill = _fill_module()
    folder = tmp_path_factory.mktemp("parity")
    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        if model not in made:
            keys = json.loads((PARITY / f"keys_{model}.json").read_text())
            sd = fill.fill_state_dict(str(PARITY / f"keys_{model}.json"), seed=parity_meta["fill_seed"])
            assert fill.state_dict_sha256(sd) == parity_meta["state_dict_sha256"][model]
            path = folder / f"{model}_synth.pth"
            torch.save({keys["checkpoint_param_key"]: sd}, path)
            made[model] = path
        return made[model]

    return make


def to_input(u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) RGB uint8 → (B, 3, H, W) float32 in [-1, 1], as the official script does."""
    x = (u8.astype(np.float64) / 255.0).astype(np.float32)
    x = torch.from_numpy(x)
    if x.dim() == 3:
        x = x[None]
    return ((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
