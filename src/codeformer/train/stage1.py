"""Stage I step: VQGAN (encoder, codebook, generator) and the patch discriminator on HQ faces (spec §2.2).

Generator loss: L1 + LPIPS (the reconstruction term) + code loss, plus from `d_start` the hinge GAN term
scaled by the adaptive weight measured at `generator.blocks[-1].weight` (× `gan_scale`, official 0.8).
From `d_start` every iteration also takes one discriminator step on (HQ, detached reconstruction).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ..config import Stage1Config
from ..losses.adversarial import adaptive_weight, d_loss, g_loss
from ..losses.perceptual import LPIPSLoss
from ..models.discriminator import PatchDiscriminator
from ..models.vqgan import VQAutoEncoder
from .runtime import Stepper, adam, frozen
from .setup import StageParts, build_perceptual, stage_parts


@dataclass
class Stage1Models:
    """Everything one stage-1 step touches."""

    cfg: Stage1Config
    vqgan: VQAutoEncoder
    disc: PatchDiscriminator
    perceptual: LPIPSLoss | None  # None when the perceptual weight is 0 (not computed)
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def build(cfg: Stage1Config, device: torch.device) -> StageParts:
    """Fresh VQGAN and discriminator (the caller seeds the RNG), LPIPS, and Adam for each."""
    vqgan = VQAutoEncoder.from_config(cfg.model).to(device)
    d = cfg.discriminator
    disc = PatchDiscriminator(d.nc, d.ndf, d.n_layers).to(device)
    m = Stage1Models(cfg, vqgan, disc, build_perceptual(cfg.perceptual, device) if cfg.losses.perceptual else None,
                     adam(vqgan.parameters(), cfg.optim_g), adam(disc.parameters(), cfg.optim_d))
    return stage_parts(partial(train_step, m), (vqgan, m.opt_g, cfg.optim_g), (disc, m.opt_d, cfg.optim_d))


def discriminator_step(disc: PatchDiscriminator, opt: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor, stepper: Stepper, grad_clip: float | None) -> dict[str, float]:
    """One hinge step of D on real (B, 3, S, S) and detached fake images; real and fake pass D separately
    (as the official code does, so BatchNorm sees each batch on its own). Returns D metrics."""
    with stepper.autocast():
        real_logits = disc(real)
        fake_logits = disc(fake.detach())
        loss = d_loss(real_logits, fake_logits)
    stepper.optimize(loss, opt, grad_clip)
    return {"d_loss": loss.item(), "d_real": real_logits.mean().item(), "d_fake": fake_logits.mean().item()}


def train_step(m: Stage1Models, batch: dict[str, torch.Tensor], step: int, stepper: Stepper
               ) -> dict[str, float | None]:
    """One stage-1 iteration on `batch["hq"]` (B, 3, S, S) in [-1, 1]; `step` is 1-based. Returns metrics."""
    hq = batch["hq"]
    w = m.cfg.losses
    gan_on = step >= w.d_start
    with stepper.autocast(), frozen(m.disc):
        res = m.vqgan(hq)
        l1 = (res.out - hq).abs().mean()
        perceptual = m.perceptual(res.out, hq) if m.perceptual is not None else res.out.new_zeros(())
        rec = w.l1 * l1 + w.perceptual * perceptual
        total = rec + w.codebook * res.quant.loss
        metrics: dict[str, float | None] = {"l1": l1.item(), "perceptual": perceptual.item(),
                                            "codebook": res.quant.loss.item(),
                                            "perplexity": res.quant.perplexity.item()}
        if gan_on:
            gan = g_loss(m.disc(res.out))
            weight = adaptive_weight(rec, gan, m.vqgan.generator.blocks[-1].weight, w.gan_scale)
            total = total + weight * gan
            metrics.update(gan=gan.item(), gan_weight=weight.item())
    stepper.optimize(total, m.opt_g, m.cfg.optim_g.grad_clip)
    metrics["total"] = total.item()
    if gan_on:
        metrics.update(discriminator_step(m.disc, m.opt_d, hq, res.out, stepper, m.cfg.optim_d.grad_clip))
    return metrics
