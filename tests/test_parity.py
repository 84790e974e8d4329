"""Parity with the official network: the kit's filled weights, saved in the official layout, loaded through our
loader, must reproduce the official outputs (../shared/parity/reference.npz) within the kit's tolerances.

The networks run on $CODEFORMER_TEST_DEVICE (default cpu; see conftest.PARITY_TOLERANCE for each device's bounds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codeformer.checkpoint import load_codeformer, load_discriminator, load_vqgan
from tests.conftest import to_input

CODE_MARGIN_MIN = 1e-2  # logits: skip near-ties below this margin
VQ_MARGIN_MIN = 0.1  # squared distances: skip near-ties below this margin


def max_abs(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().float().cpu() - torch.from_numpy(b)).abs().max())


def assert_codes(codes: torch.Tensor, ref_codes: np.ndarray, ref_margin: np.ndarray, min_margin: float) -> None:
    clear = ref_margin >= min_margin
    assert clear.mean() > 0.95  # the comparison covers nearly every token
    np.testing.assert_array_equal(codes.cpu().numpy()[clear], ref_codes[clear])


@pytest.fixture(scope="module")
def codeformer(filled_checkpoint, test_device):
    return load_codeformer(filled_checkpoint("codeformer")).to(test_device)


@pytest.mark.slow
def test_codeformer_w05_adain_logits_and_codes(codeformer, parity_ref, test_device, parity_tol):
    x = to_input(parity_ref["input_rgb_u8"]).to(test_device)
    with torch.no_grad():
        out = codeformer(x, w=0.5, adain_latent=True)
    assert max_abs(out.out, parity_ref["cf_out_w05"]) <= parity_tol["image"]
    assert max_abs(out.logits, parity_ref["cf_logits"]) <= parity_tol["logit"]
    assert max_abs(out.lq_feat, parity_ref["cf_lq_feat"]) <= parity_tol["image"]
    assert_codes(out.logits.argmax(-1), parity_ref["cf_codes"], parity_ref["cf_code_margin"], CODE_MARGIN_MIN)


@pytest.mark.slow
@pytest.mark.parametrize("w,adain,key", [(0.0, True, "cf_out_w0"), (1.0, True, "cf_out_w1"),
                                         (0.5, False, "cf_out_w05_noadain")])
def test_codeformer_outputs(codeformer, parity_ref, w, adain, key, test_device, parity_tol):
    x = to_input(parity_ref["input_rgb_u8"]).to(test_device)
    out = codeformer.restore(x, w=w, adain_latent=adain)
    assert max_abs(out, parity_ref[key]) <= parity_tol["image"]


@pytest.mark.slow
def test_codeformer_batch_of_two(codeformer, parity_ref, test_device, parity_tol):
    x = to_input(np.stack([parity_ref["input_rgb_u8"], parity_ref["input2_rgb_u8"]])).to(test_device)
    with torch.no_grad():
        out = codeformer(x, w=0.5, adain_latent=True)
    assert max_abs(out.out, parity_ref["cf_batch2_out_w05"]) <= parity_tol["image"]
    assert max_abs(out.logits, parity_ref["cf_batch2_logits"]) <= parity_tol["logit"]
    assert max_abs(out.lq_feat, parity_ref["cf_batch2_lq_feat"]) <= parity_tol["image"]
    assert_codes(out.logits.argmax(-1), parity_ref["cf_batch2_codes"], parity_ref["cf_batch2_code_margin"],
                 CODE_MARGIN_MIN)


@pytest.mark.slow
def test_vqgan(filled_checkpoint, parity_ref, test_device, parity_tol):
    model = load_vqgan(filled_checkpoint("vqgan")).to(test_device)
    x = to_input(parity_ref["input_rgb_u8"]).to(test_device)
    with torch.no_grad():
        res = model(x)
    assert max_abs(res.out, parity_ref["vq_out"]) <= parity_tol["image"]
    assert max_abs(res.z, parity_ref["vq_z"]) <= parity_tol["image"]
    assert max_abs(res.quant.z_q, parity_ref["vq_quant"]) <= parity_tol["image"]
    assert_codes(res.quant.indices.flatten(), parity_ref["vq_codes"], parity_ref["vq_code_margin"], VQ_MARGIN_MIN)
    assert abs(float(res.quant.loss) - float(parity_ref["vq_codebook_loss"])) <= 1e-4 * abs(
        float(parity_ref["vq_codebook_loss"]))
    assert abs(float(res.quant.perplexity) - float(parity_ref["vq_perplexity"])) <= 1e-3
    assert abs(float(res.quant.mean_distance) - float(parity_ref["vq_mean_distance"])) <= 1e-3


def test_discriminator_eval_and_train(filled_checkpoint, parity_ref, test_device, parity_tol):
    path = filled_checkpoint("discriminator")
    x = to_input(np.stack([parity_ref["input_rgb_u8"], parity_ref["input2_rgb_u8"]])).to(test_device)
    with torch.no_grad():
        model = load_discriminator(path).to(test_device)
        assert max_abs(model(x), parity_ref["disc_out_eval"]) <= parity_tol["image"]
        model = load_discriminator(path).to(test_device).train()
        assert max_abs(model(x), parity_ref["disc_out_train"]) <= parity_tol["image"]
    for i in (3, 6, 9, 12):
        bn = model.main[i]
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            ref = parity_ref[f"disc_after_train_main_{i}_{name}"]
            got = getattr(bn, name).detach().cpu().numpy()
            np.testing.assert_allclose(got, ref, atol=parity_tol["stats"], rtol=parity_tol["stats"])


@pytest.mark.slow
def test_runner_fp32_keeps_parity(codeformer, parity_ref, test_device, parity_tol):
    from codeformer.runtime import TorchRunner

    out = TorchRunner(codeformer, test_device, "fp32").restore(to_input(parity_ref["input_rgb_u8"]), w=1.0)
    assert max_abs(out, parity_ref["cf_out_w1"]) <= parity_tol["image"]
