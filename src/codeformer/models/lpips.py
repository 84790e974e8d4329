"""LPIPS (VGG variant, v0.1) on our own VGG16 feature extractor: the network, frozen.

Two users: the perceptual training loss (`losses.perceptual.LPIPSLoss`) and the LPIPS metric
(`metrics.fidelity.LPIPSMetric`); it lives with the other networks so that neither has to import the other.

The VGG16 part mirrors torchvision's `vgg16().features` index for index, so the ImageNet file
`vgg16-397923af.pth` loads directly (its `classifier.*` entries are ignored). The five linear heads use the
key layout of the LPIPS v0.1 `vgg.pth` file: `lin{i}.model.1.weight`, shape (1, C, 1, 1), no bias.
Constructors build with random weights; real weights arrive as file paths (`LPIPS.from_files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "VGG16Features"]

# torchvision vgg16 `features` (config "D"): numbers are conv output channels, "M" a 2×2 max pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` of the ReLUs whose outputs LPIPS compares: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_TAPS = (3, 8, 15, 22, 29)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """The 13 conv layers of VGG16 (with their ReLUs and the first four max pools), torchvision key names.

    forward(x): x (B, 3, H, W) float, already normalised by the caller → list of the five tap activations,
    shapes (B, 64, H, W), (B, 128, H/2, W/2), (B, 256, H/4, W/4), (B, 512, H/8, W/8), (B, 512, H/16, W/16).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_channels = int(item)
        # Conv indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, as in torchvision.
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
        return taps

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strictly load a torchvision vgg16 state dict; its `classifier.*` entries are ignored."""
        features = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
        self.load_state_dict(features, strict=True)


class _LinearHead(nn.Module):
    """LPIPS `NetLinLayer`: a bias-free 1×1 conv to one channel. Index 0 held dropout in LPIPS's training;
    it is an identity here (LPIPS is only evaluated), which keeps the weight under the key `model.1.weight`.

    The released heads are non-negative (LPIPS clamps them while training), which makes the distance >= 0;
    the random initial weights are drawn non-negative too, so an unloaded LPIPS keeps that property.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))
        nn.init.uniform_(self.model[1].weight, 0.0, 2.0 / channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide every feature vector (over channels) by its L2 norm + eps. (B, C, H, W) → same."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual image patch similarity, VGG variant v0.1, frozen and in eval mode.

    forward(x0, x1): two (B, 3, H, W) float images in [-1, 1] (H, W >= 16) → (B,) distances: >= 0 (the
    heads are non-negative), 0 for identical inputs, symmetric in its arguments. Gradients flow to the inputs only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        self.lin0 = _LinearHead(_TAP_CHANNELS[0])
        self.lin1 = _LinearHead(_TAP_CHANNELS[1])
        self.lin2 = _LinearHead(_TAP_CHANNELS[2])
        self.lin3 = _LinearHead(_TAP_CHANNELS[3])
        self.lin4 = _LinearHead(_TAP_CHANNELS[4])
        # LPIPS's ScalingLayer constants: they map [-1, 1] inputs to roughly ImageNet-normalised ones.
        # Not persistent: they are constants, and neither weight file holds them.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """LPIPS is only ever evaluated: stays in eval mode whatever a parent module asks."""
        return super().train(False)

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path) -> LPIPS:
        """Build and strictly load: torchvision's `vgg16-397923af.pth` and LPIPS v0.1 `vgg.pth` (weights_only)."""
        model = cls()
        model.vgg.load_torchvision_state_dict(torch.load(vgg_path, map_location="cpu", weights_only=True))
        model.load_lin_state_dict(torch.load(lin_path, map_location="cpu", weights_only=True))
        return model

    def load_lin_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strictly load the five heads from keys `lin{i}.model.1.weight`; any other key is an error."""
        heads = nn.ModuleDict({f"lin{i}": getattr(self, f"lin{i}") for i in range(len(_TAPS))})
        heads.load_state_dict(state_dict, strict=True)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        feats0 = self.vgg((x0 - self.shift) / self.scale)
        feats1 = self.vgg((x1 - self.shift) / self.scale)
        heads = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        total = x0.new_zeros(x0.shape[0])
        for f0, f1, head in zip(feats0, feats1, heads, strict=True):
            diff = (_unit_normalize(f0) - _unit_normalize(f1)) ** 2  # (B, C, h, w)
            total = total + head(diff).mean(dim=(1, 2, 3))  # (B, 1, h, w) → spatial mean → (B,)
        return total
