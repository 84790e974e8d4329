"""Tests for codeformer.losses: LPIPS on our VGG16, hinge GAN + adaptive weight, stage-2 code losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codeformer.losses.adversarial import adaptive_weight, d_loss, g_loss
from codeformer.losses.codes import code_accuracy, code_losses
from codeformer.losses.perceptual import LPIPSLoss
from codeformer.models.lpips import LPIPS, VGG16Features

VGG_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
             14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512),
             28: (512, 512)}
LIN_CHANNELS = (64, 128, 256, 512, 512)


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS()


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _torchvision_layout(tmp_path: Path) -> tuple[Path, Path, dict, dict]:
    """Random tensors saved in the key layout of vgg16-397923af.pth and LPIPS v0.1 vgg.pth."""
    g = torch.Generator().manual_seed(1)
    vgg = {}
    for i, (out_ch, in_ch) in VGG_CONVS.items():
        vgg[f"features.{i}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * 0.05
        vgg[f"features.{i}.bias"] = torch.randn(out_ch, generator=g) * 0.05
    vgg["classifier.0.weight"] = torch.randn(8, 8, generator=g)  # shape irrelevant: ignored on load
    vgg["classifier.0.bias"] = torch.randn(8, generator=g)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LIN_CHANNELS)}
    vgg_path, lin_path = tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth"
    torch.save(vgg, vgg_path)
    torch.save(lin, lin_path)
    return vgg_path, lin_path, vgg, lin


def test_vgg_keys_match_torchvision_layout() -> None:
    sd = VGG16Features().state_dict()
    expected = {f"features.{i}.{p}" for i in VGG_CONVS for p in ("weight", "bias")}
    assert set(sd) == expected
    for i, (out_ch, in_ch) in VGG_CONVS.items():
        assert sd[f"features.{i}.weight"].shape == (out_ch, in_ch, 3, 3)


def test_vgg_tap_shapes() -> None:
    taps = VGG16Features()(torch.zeros(1, 3, 32, 32))
    assert [tuple(t.shape) for t in taps] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8),
                                              (1, 512, 4, 4), (1, 512, 2, 2)]


def test_lpips_zero_on_identical(lpips: LPIPS) -> None:
    x = _images(0)
    d = lpips(x, x.clone())
    assert d.shape == (2,)
    assert torch.all(d == 0)


def test_lpips_symmetric_and_positive(lpips: LPIPS) -> None:
    x, y = _images(0), _images(1)
    d_xy, d_yx = lpips(x, y), lpips(y, x)
    torch.testing.assert_close(d_xy, d_yx)
    assert torch.all(d_xy > 0)


def test_lpips_gradient_reaches_input_not_net(lpips: LPIPS) -> None:
    x, y = _images(0).requires_grad_(True), _images(1)
    lpips(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in lpips.parameters())


def test_lpips_loads_torchvision_and_lpips_files_strictly(tmp_path: Path) -> None:
    vgg_path, lin_path, vgg, lin = _torchvision_layout(tmp_path)
    model = LPIPS.from_files(vgg_path, lin_path)
    sd = model.state_dict()
    for key, value in vgg.items():
        if key.startswith("features."):
            assert torch.equal(sd[f"vgg.{key}"], value)
    for key, value in lin.items():
        assert torch.equal(sd[key], value)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # Strict: a missing head or an unknown key is an error.
    bad = dict(lin)
    del bad["lin4.model.1.weight"]
    torch.save(bad, lin_path)
    with pytest.raises(RuntimeError, match="lin4"):
        LPIPS.from_files(vgg_path, lin_path)
    torch.save({**lin, "lin5.model.1.weight": torch.zeros(1, 8, 1, 1)}, lin_path)
    with pytest.raises(RuntimeError, match="lin5"):
        LPIPS.from_files(vgg_path, lin_path)
    no_conv = {k: v for k, v in vgg.items() if k != "features.28.bias"}
    torch.save(no_conv, vgg_path)
    with pytest.raises(RuntimeError, match=r"features\.28\.bias"):
        LPIPS.from_files(vgg_path, lin_path)


def test_lpips_matches_hand_computation_with_loaded_weights(tmp_path: Path) -> None:
    vgg_path, lin_path, _, lin = _torchvision_layout(tmp_path)
    model = LPIPS.from_files(vgg_path, lin_path)
    x, y = _images(2, n=1), _images(3, n=1)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx, fy = model.vgg((x - shift) / scale), model.vgg((y - shift) / scale)
    expected = torch.zeros(1)
    for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)
        expected += ((a - b) ** 2 * w).sum(dim=1).mean(dim=(1, 2))
    torch.testing.assert_close(model(x, y), expected)


def test_lpips_loss_normalisation_and_frozen(lpips: LPIPS) -> None:
    loss = LPIPSLoss(lpips)
    pred, target = _images(4).requires_grad_(True), _images(5)
    value = loss(pred, target)
    assert value.dim() == 0 and value > 0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = lpips(((target + 1) / 2 - mean) / std, ((pred + 1) / 2 - mean) / std).mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    nn.Sequential(loss).train()
    assert not loss.training and not loss.lpips.training
    assert loss(target, target) == 0


def test_hinge_losses_hand_computed() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2 → mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = 0, 1, 2 → mean 1
    torch.testing.assert_close(d_loss(real, fake), torch.tensor(2.5 / 3 + 1.0))
    torch.testing.assert_close(g_loss(fake), torch.tensor(1.0 / 3))
    assert d_loss(torch.full((4,), 1.5), torch.full((4,), -1.5)) == 0


def _tiny_generator() -> tuple[nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, generator=g))
        layer.bias.zero_()
    x = torch.randn(4, 3, generator=g)
    target = torch.randn(4, 2, generator=g)
    return layer, x, target, layer(x)


def test_adaptive_weight_is_the_gradient_norm_ratio() -> None:
    layer, x, target, out = _tiny_generator()
    rec = ((out - target) ** 2).mean()
    gan = -(0.05 * out).mean()
    # By hand: d rec/dW = 2/(4·2) Σ_b (out − target)_b x_bᵀ; d gan/dW = −0.05/(4·2) Σ_b 1 x_bᵀ.
    rec_grad = (2.0 / 8.0) * (out - target).detach().T @ x
    gan_grad = (-0.05 / 8.0) * torch.ones(4, 2).T @ x
    ratio = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    assert 1.0 < ratio < 1e4  # large enough that scale and clamp are both visible
    w = adaptive_weight(rec, gan, layer.weight, scale=0.8, max_weight=1e4)
    torch.testing.assert_close(w, 0.8 * ratio)
    assert not w.requires_grad
    # Clamped at max_weight before scaling; the graphs are still usable afterwards.
    torch.testing.assert_close(adaptive_weight(rec, gan, layer.weight, scale=0.1), torch.tensor(0.1))
    (rec + w * gan).backward()
    assert layer.weight.grad is not None


def test_adaptive_weight_clamped_below_at_zero_gradient() -> None:
    layer, x, target, out = _tiny_generator()
    rec = 0.0 * out.sum()
    gan = out.sum()
    assert adaptive_weight(rec, gan, layer.weight, scale=0.8) == 0


def test_code_losses() -> None:
    g = torch.Generator().manual_seed(0)
    b, n, k, c = 2, 16, 8, 4
    logits = torch.randn(b, n, k, generator=g, requires_grad=True)
    target = torch.randint(0, k, (b, n), generator=g)
    lq_feat = torch.randn(b, c, 4, 4, generator=g, requires_grad=True)
    codebook_feat = torch.randn(b, c, 4, 4, generator=g, requires_grad=True)
    losses = code_losses(logits, lq_feat, target, codebook_feat)
    assert set(losses) == {"cross_entropy", "latent_l2"}
    torch.testing.assert_close(losses["cross_entropy"], F.cross_entropy(logits.reshape(-1, k), target.reshape(-1)))
    torch.testing.assert_close(losses["latent_l2"], F.mse_loss(lq_feat, codebook_feat))
    (losses["cross_entropy"] + losses["latent_l2"]).backward()
    assert logits.grad is not None and lq_feat.grad is not None
    assert codebook_feat.grad is None  # the codebook target is detached
    same = code_losses(logits, lq_feat, target, lq_feat.detach().clone())
    assert same["latent_l2"] == 0


def test_code_accuracy() -> None:
    logits = torch.zeros(1, 4, 3)
    logits[0, torch.arange(4), torch.tensor([0, 1, 2, 0])] = 1.0
    assert code_accuracy(logits, torch.tensor([[0, 1, 2, 2]])) == 0.75
