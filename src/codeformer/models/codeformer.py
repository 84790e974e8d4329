"""CodeFormer: codebook lookup transformer with controllable feature transformation.

    LQ image ─ encoder ─► lq_feat ─ transformer ─► code logits ─ argmax ─► codebook rows ─ generator ─► image
                  │ skips (32..256)                                                            ▲
                  └──────────────── fusion: dec + w·(dec⊙scale + shift) ───────────────────────┘

Stage 2 trains the encoder and transformer to predict the HQ codes (`predict_codes`); stage 3 also trains the
fusion blocks (`forward` with w > 0); inference calls `restore`. The codebook and generator come from the
stage-1 VQGAN and stay frozen (the training code freezes them, not this constructor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import CodeFormerConfig
from .fusion import FuseBlock, adain
from .quantizer import VectorQuantizer
from .transformer import TransformerLayer, code_logit_head
from .vqgan import Encoder, Generator

Weight = float | torch.Tensor


@dataclass
class CodeFormerOutput:
    """out (B, 3, S, S) image, about [-1, 1], unclamped; logits (B, N, K); lq_feat (B, C, h, w)."""

    out: torch.Tensor
    logits: torch.Tensor
    lq_feat: torch.Tensor


@dataclass
class LatentPrediction:
    """latent (B, C, h, w) to decode; skips {r: (B, C_r, r, r)}; logits (B, N, K); lq_feat (B, C, h, w)."""

    latent: torch.Tensor
    skips: dict[int, torch.Tensor]
    logits: torch.Tensor
    lq_feat: torch.Tensor


class CodeFormer(nn.Module):
    """The released network (94.1 M parameters at the defaults); arguments mirror the official constructor."""

    def __init__(self, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9, codebook_size: int = 1024,
                 latent_size: int = 256, connect_list: tuple[int, ...] = (32, 64, 128, 256), img_size: int = 512,
                 nf: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8), res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), emb_dim: int = 256, beta: float = 0.25,
                 beta_placement: str = "official") -> None:
        super().__init__()
        latent_res = img_size // 2 ** (len(ch_mult) - 1)
        if latent_size != latent_res**2:
            raise ValueError(f"latent_size {latent_size} must be ({img_size} / 2^{len(ch_mult) - 1})² = "
                             f"{latent_res**2}")
        self.img_size = img_size
        self.latent_res = latent_res
        self.connect_list = tuple(int(r) for r in connect_list)
        # autoencoder part (stage 1), same names as VQAutoEncoder
        self.encoder = Encoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta, beta_placement)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        # code prediction (stage 2)
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.ModuleList(TransformerLayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers))
        self.idx_pred_layer = code_logit_head(dim_embd, codebook_size)
        # controllable feature transformation (stage 3)
        for r in self.connect_list:
            if r not in self.generator.fuse_blocks or r not in self.encoder.skip_blocks:
                raise ValueError(f"connect_list entry {r} is not a resolution of this network")
        self.fuse_convs_dict = nn.ModuleDict(
            {str(r): FuseBlock(self.generator.channels[r]) for r in self.connect_list})

    @classmethod
    def from_config(cls, cfg: CodeFormerConfig) -> CodeFormer:
        v = cfg.vqgan
        latent_res = v.img_size // 2 ** (len(v.ch_mult) - 1)
        return cls(cfg.dim_embd, cfg.n_head, cfg.n_layers, v.codebook_size, latent_res**2, cfg.connect_list,
                   v.img_size, v.nf, v.ch_mult, v.res_blocks, v.attn_resolutions, v.emb_dim, v.beta,
                   v.beta_placement)

    def code_logits(self, lq_feat: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, h, w) → logits (B, h·w, K) over the codebook, tokens in row-major order.

        Always computed in fp32, also under a low-precision autocast: the argmax of these logits picks the
        codes, and bf16 rounding would flip close choices. The transformer is a small share of the FLOPs.
        """
        with torch.autocast(lq_feat.device.type, enabled=False):
            x = self.feat_emb(lq_feat.float().flatten(2).transpose(1, 2))  # (B, N, D)
            for layer in self.ft_layers:
                x = layer(x, self.position_emb)
            return self.idx_pred_layer(x)

    def predict_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: LQ image (B, 3, S, S) in [-1, 1] → (logits (B, N, K), lq_feat (B, C, h, w))."""
        lq_feat = self.encoder(x)
        return self.code_logits(lq_feat), lq_feat

    def codes_to_latent(self, logits: torch.Tensor) -> torch.Tensor:
        """Top-1 code per token → codebook rows (B, C, h, w)."""
        b = logits.shape[0]
        indices = logits.argmax(dim=2).view(b, self.latent_res, self.latent_res)
        return self.quantize.lookup(indices)

    def decode(self, latent: torch.Tensor, skips: dict[int, torch.Tensor], w: Weight) -> torch.Tensor:
        """Generator with fusion: latent (B, C, h, w) and encoder skips {r: (B, C_r, r, r)} → (B, 3, S, S).

        A plain `w == 0` adds exactly nothing, so the fusion blocks are not run then (about a quarter of the
        network's FLOPs); a tensor w always runs them.
        """
        fuse_at = {} if (not isinstance(w, torch.Tensor) and w == 0) else {
            self.generator.fuse_blocks[r]: r for r in self.connect_list}
        x = latent
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in fuse_at:
                r = fuse_at[i]
                # skips are detached: fusion losses must not reach the encoder through them
                x = self.fuse_convs_dict[str(r)](skips[r].detach(), x, w)
        return x

    def predict_latent(self, x: torch.Tensor, adain_latent: bool = False) -> LatentPrediction:
        """Encoder, transformer and codebook lookup: LQ image (B, 3, S, S) in [-1, 1] → the latent the
        generator decodes, plus the encoder skips, logits and LQ latent.

        `adain_latent` renormalises the looked-up latent to the LQ latent's channel statistics (inference
        default in `restore`; training does not use it). The looked-up latent is always detached.
        """
        lq_feat, skips = self.encoder.forward_with_skips(x, self.connect_list)
        logits = self.code_logits(lq_feat)
        latent = self.codes_to_latent(logits).detach()
        if adain_latent:
            latent = adain(latent, lq_feat.float())
        return LatentPrediction(latent=latent, skips=skips, logits=logits, lq_feat=lq_feat)

    def forward(self, x: torch.Tensor, w: Weight = 0.5, adain_latent: bool = False) -> CodeFormerOutput:
        """Full pass, LQ image (B, 3, S, S) in [-1, 1] → image, logits and LQ latent (stage 3 and parity)."""
        p = self.predict_latent(x, adain_latent)
        return CodeFormerOutput(out=self.decode(p.latent, p.skips, w), logits=p.logits, lq_feat=p.lq_feat)

    @torch.no_grad()
    def restore(self, x: torch.Tensor, w: Weight = 0.5, adain_latent: bool = True) -> torch.Tensor:
        """Inference: aligned faces (B, 3, S, S) RGB in [-1, 1] → restored faces (B, 3, S, S), unclamped.

        w ∈ [0, 1]: 0 trusts the codebook (quality), 1 keeps more of the input (fidelity).
        """
        return self.forward(x, w, adain_latent).out
