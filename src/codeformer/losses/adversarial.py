"""Hinge GAN losses and the adaptive generator weight of the official stages 1 and 3 (spec §2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptive_weight", "d_loss", "g_loss"]


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss: mean(relu(1 − real)) + mean(relu(1 + fake)).

    Args:
        real_logits, fake_logits: discriminator outputs of any shape (e.g. (B, 1, h, w) patch logits);
            `fake_logits` should come from detached generator outputs.

    Returns:
        scalar tensor, >= 0.
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: −mean(D(fake)). `fake_logits` of any shape → scalar tensor."""
    return -fake_logits.mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer_weight: torch.Tensor,
    scale: float,
    max_weight: float = 1.0,
) -> torch.Tensor:
    """Balance the GAN term against the reconstruction term at one layer of the generator.

    weight = clamp(‖∇rec‖ / (‖∇gan‖ + 1e-4), 0, max_weight), detached, times `scale` (official: 0.8 in stage 1
    at the decoder's last conv, 0.1 in stage 3 at the 256-level fusion shift conv). Both losses must depend
    on `last_layer_weight`; their graphs are kept (retain_graph) for the caller's backward pass.

    Returns:
        scalar tensor without grad, in [0, max_weight · scale].
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True)
    weight = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(gan_grad) + 1e-4)
    return torch.clamp(weight, 0.0, max_weight).detach() * scale
