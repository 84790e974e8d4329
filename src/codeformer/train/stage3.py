"""Stage III step: controllable fusion with a configured w / degradation schedule (spec §2.4).

Each 1-based step picks its phase from `cfg.schedule` (`phase_at`). Fidelity phases (w set) run the full
network on that phase's LQ input with L1 + LPIPS + hinge GAN (adaptive weight at the highest-resolution fusion
block's `shift[-1].weight`, × `gan_scale`, official 0.1) + CE + latent L2, and one D step from `d_start`.
Code-only phases (w null) run `predict_codes` with CE + latent L2 only and no D step.
Trainable: encoder, transformer parts, fusion blocks. Frozen: quantize, generator.
The inpainting model is this step with one phase (w = 1 on brush-stroke inputs) and G started from the VQGAN
(`init_from: vqgan`, configs/inpainting.yaml; spec §2.6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import torch

from ..checkpoint import load_state_dict_strict, read_state_dict
from ..config import PhaseConfig, Stage3Config
from ..losses.adversarial import adaptive_weight, g_loss
from ..losses.perceptual import LPIPSLoss
from ..models.codeformer import CodeFormer
from ..models.discriminator import PatchDiscriminator
from ..models.vqgan import VQAutoEncoder
from .runtime import Stepper, adam, frozen
from .setup import StageParts, build_perceptual, frozen_vqgan, load_autoencoder_part, stage_parts, target_codes
from .stage1 import discriminator_step
from .stage2 import code_terms

log = logging.getLogger(__name__)


@dataclass
class Stage3Models:
    """Everything one stage-3 step touches; `hq_vqgan` is None when the data carries precomputed codes."""

    cfg: Stage3Config
    model: CodeFormer
    disc: PatchDiscriminator
    perceptual: LPIPSLoss | None  # None when the perceptual weight is 0 (not computed)
    hq_vqgan: VQAutoEncoder | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def phase_at(schedule: tuple[PhaseConfig, ...], step: int) -> PhaseConfig:
    """The phase of 1-based `step`: the first with step <= until (null: no end) and step % every == 0."""
    for phase in schedule:
        if (phase.until is None or step <= phase.until) and step % phase.every == 0:
            return phase
    raise ValueError(f"no schedule phase covers step {step}")  # unreachable for a validated config


def _load_generator(cfg: Stage3Config, model: CodeFormer, hq_vqgan: VQAutoEncoder | None) -> None:
    if cfg.codeformer_path is not None:
        load_state_dict_strict(model, read_state_dict(cfg.codeformer_path), cfg.codeformer_path)
        return
    if cfg.init_from != "vqgan":
        log.warning("no codeformer_path: CodeFormer starts from the (random or given) VQGAN only (random_init)")
    if hq_vqgan is not None:
        load_autoencoder_part(model, hq_vqgan.state_dict(), cfg.vqgan_path or "random VQGAN")


def _discriminator(cfg: Stage3Config, device: torch.device) -> PatchDiscriminator:
    d = cfg.discriminator
    disc = PatchDiscriminator(d.nc, d.ndf, d.n_layers)
    if cfg.discriminator_path is None and cfg.init_from == "vqgan":
        log.info("no discriminator_path: D starts from random weights (as in the official inpainting recipe)")
    elif cfg.discriminator_path is None:
        log.warning("no discriminator_path: D starts from random weights (official: the stage-1 discriminator)")
    else:
        load_state_dict_strict(disc, read_state_dict(cfg.discriminator_path), cfg.discriminator_path)
    return disc.to(device)


def build(cfg: Stage3Config, device: torch.device) -> StageParts:
    """CodeFormer from the stage-2 weights, D from the stage-1 discriminator, frozen HQ VQGAN for the targets."""
    needs_vqgan = cfg.data.codes_path is None or cfg.codeformer_path is None
    hq_vqgan = frozen_vqgan(cfg.model.vqgan, cfg.vqgan_path, device) if needs_vqgan else None
    model = CodeFormer.from_config(cfg.model)
    _load_generator(cfg, model, hq_vqgan)
    model = model.to(device)
    model.quantize.requires_grad_(False)
    model.generator.requires_grad_(False)
    disc = _discriminator(cfg, device)
    m = Stage3Models(cfg, model, disc, build_perceptual(cfg.perceptual, device) if cfg.losses.perceptual else None,
                     None if cfg.data.codes_path else hq_vqgan,
                     adam(model.parameters(), cfg.optim_g), adam(disc.parameters(), cfg.optim_d))
    return stage_parts(partial(train_step, m), (model, m.opt_g, cfg.optim_g), (disc, m.opt_d, cfg.optim_d),
                       last_value_keys=("w", "phase"))


def _fidelity_step(m: Stage3Models, batch: dict[str, torch.Tensor], lq: torch.Tensor, target: torch.Tensor,
                   w: float, gan_on: bool, stepper: Stepper) -> dict[str, float | None]:
    hq = batch["hq"]
    loss_w = m.cfg.losses
    last_layer = m.model.fuse_convs_dict[str(max(m.model.connect_list))].shift[-1].weight
    with stepper.autocast(), frozen(m.disc):
        res = m.model(lq, w)
        l1 = (res.out - hq).abs().mean()
        perceptual = m.perceptual(res.out, hq) if m.perceptual is not None else res.out.new_zeros(())
        rec = loss_w.l1 * l1 + loss_w.perceptual * perceptual
        codes, metrics = code_terms(m.model, res.logits, res.lq_feat, target, loss_w.cross_entropy,
                                    loss_w.latent_l2)
        total = rec + codes
        metrics.update(l1=l1.item(), perceptual=perceptual.item())
        if gan_on:
            gan = g_loss(m.disc(res.out))
            weight = adaptive_weight(rec, gan, last_layer, loss_w.gan_scale)
            total = total + weight * gan
            metrics.update(gan=gan.item(), gan_weight=weight.item())
    stepper.optimize(total, m.opt_g, m.cfg.optim_g.grad_clip)
    metrics["total"] = total.item()
    if gan_on:
        metrics.update(discriminator_step(m.disc, m.opt_d, hq, res.out, stepper, m.cfg.optim_d.grad_clip))
    return metrics


def _code_only_step(m: Stage3Models, lq: torch.Tensor, target: torch.Tensor, stepper: Stepper
                    ) -> dict[str, float | None]:
    with stepper.autocast():
        logits, lq_feat = m.model.predict_codes(lq)
        loss, metrics = code_terms(m.model, logits, lq_feat, target, m.cfg.losses.cross_entropy,
                                   m.cfg.losses.latent_l2)
    stepper.optimize(loss, m.opt_g, m.cfg.optim_g.grad_clip)
    metrics["total"] = loss.item()
    return metrics


def train_step(m: Stage3Models, batch: dict[str, torch.Tensor], step: int, stepper: Stepper
               ) -> dict[str, float | None]:
    """One stage-3 iteration (`step` 1-based). Metrics include `w` (null on code-only steps) and `phase`."""
    phase = phase_at(m.cfg.schedule, step)
    target = target_codes(batch, m.hq_vqgan)
    lq = batch[f"lq_{phase.degradation}"]
    if phase.w is None:
        metrics = _code_only_step(m, lq, target, stepper)
    else:
        metrics = _fidelity_step(m, batch, lq, target, phase.w, step >= m.cfg.losses.d_start, stepper)
    metrics.update(w=phase.w, phase=float(m.cfg.schedule.index(phase)))
    return metrics
