"""Stage II step: predict the HQ codes from "large"-degraded faces (spec §2.3), or from colour-degraded faces for
the colorization model (`degradation: colorization`, spec §2.6: the official recipe is this same step).

Trainable: encoder, position_emb, feat_emb, ft_layers, idx_pred_layer. Frozen (requires_grad False): quantize
(the codebook), generator, and the fusion blocks (not in the code-only graph). Targets: the frozen HQ VQGAN's
nearest codes of the HQ face, or precomputed codes. Loss: cross-entropy × 0.5 + latent L2 × 1 (official).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ..config import Stage2Config
from ..losses.codes import code_accuracy, code_losses
from ..models.codeformer import CodeFormer
from ..models.vqgan import VQAutoEncoder
from .runtime import Stepper, adam
from .setup import StageParts, frozen_vqgan, load_autoencoder_part, stage_parts, target_codes


@dataclass
class Stage2Models:
    """Everything one stage-2 step touches; `hq_vqgan` is None when the data carries precomputed codes."""

    cfg: Stage2Config
    model: CodeFormer
    hq_vqgan: VQAutoEncoder | None
    opt: torch.optim.Optimizer


def freeze_for_stage2(model: CodeFormer) -> None:
    """Codebook, generator and fusion blocks get no gradient in stage 2."""
    for part in (model.quantize, model.generator, model.fuse_convs_dict):
        part.requires_grad_(False)


def build(cfg: Stage2Config, device: torch.device) -> StageParts:
    """CodeFormer initialised from the stage-1 VQGAN (the LQ encoder starts as the HQ encoder)."""
    hq_vqgan = frozen_vqgan(cfg.model.vqgan, cfg.vqgan_path, device)
    model = CodeFormer.from_config(cfg.model).to(device)
    load_autoencoder_part(model, hq_vqgan.state_dict(), cfg.vqgan_path or "random VQGAN")
    freeze_for_stage2(model)
    m = Stage2Models(cfg, model, None if cfg.data.codes_path else hq_vqgan, adam(model.parameters(), cfg.optim))
    return stage_parts(partial(train_step, m), (model, m.opt, cfg.optim))


def code_terms(model: CodeFormer, logits: torch.Tensor, lq_feat: torch.Tensor, target: torch.Tensor,
               ce_weight: float, l2_weight: float) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Weighted CE + latent L2 for logits (B, N, K), lq_feat (B, C, h, w), target codes (B, N); plus metrics:
    accuracy of the prediction and of the nearest-code lookup of the LQ latent (the no-transformer baseline)."""
    b, _, h, w = lq_feat.shape
    target_feat = model.quantize.lookup(target.view(b, h, w))
    terms = code_losses(logits.float(), lq_feat.float(), target, target_feat.float())
    loss = ce_weight * terms["cross_entropy"] + l2_weight * terms["latent_l2"]
    with torch.no_grad():
        nearest = model.quantize(lq_feat.detach().float()).indices.flatten(1)
    metrics: dict[str, float | None] = {
        "cross_entropy": terms["cross_entropy"].item(), "latent_l2": terms["latent_l2"].item(),
        "code_acc": code_accuracy(logits, target).item(),
        "nn_acc": (nearest == target).float().mean().item()}
    return loss, metrics


def train_step(m: Stage2Models, batch: dict[str, torch.Tensor], step: int, stepper: Stepper
               ) -> dict[str, float | None]:
    """One stage-2 iteration: `batch["lq_<cfg.degradation>"]` (B, 3, S, S) in [-1, 1] → code logits vs the HQ
    codes."""
    target = target_codes(batch, m.hq_vqgan)
    with stepper.autocast():
        logits, lq_feat = m.model.predict_codes(batch[f"lq_{m.cfg.degradation}"])
        loss, metrics = code_terms(m.model, logits, lq_feat, target, m.cfg.losses.cross_entropy,
                                   m.cfg.losses.latent_l2)
    stepper.optimize(loss, m.opt, m.cfg.optim.grad_clip)
    metrics["total"] = loss.item()
    return metrics
