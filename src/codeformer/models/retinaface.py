"""RetinaFace with a ResNet-50 body: the face detector of the official CodeFormer pipeline (facelib).

The module names are those of the released `detection_Resnet50_Final.pth` (after its DataParallel `module.`
prefix is removed), so that file loads strictly: the body uses torchvision's ResNet-50 names (`body.conv1`,
`body.layer3.2.bn2`, `body.layer1.0.downsample.1`, ...) without torchvision, then `fpn.*`, `ssh1..3.*`,
`ClassHead.k`, `BboxHead.k` and `LandmarkHead.k`. Input: (B, 3, H, W) float32 BGR minus the mean
(104, 117, 123), not scaled. Output for A anchors (2 per cell of the stride 8, 16 and 32 maps, in that order):
box offsets (B, A, 4), softmaxed class scores (B, A, 2) with the face probability in column 1, and landmark
offsets (B, A, 10). Priors and decoding live in `codeformer.face.retinaface`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESNET50_BLOCKS = (3, 4, 6, 3)
ANCHORS_PER_CELL = 2
FPN_CHANNELS = 256


def conv_bn(in_ch: int, out_ch: int, kernel: int, relu: bool) -> nn.Sequential:
    """Conv (no bias, stride 1, 'same' padding) → BatchNorm → optional ReLU; keys `0.*` and `1.*`.

    The official blocks use LeakyReLU with slope 0 when the width is above 64, which is a plain ReLU; every
    block here is 256 wide or built from a 256-wide SSH, so ReLU is exact.
    """
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1×1 → 3×3 (carries the stride) → 1×1 ×4 channels, plus the shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * 4
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet50Body(nn.Module):
    """ResNet-50 without its pooling and classifier; returns the layer2, layer3, layer4 maps.

    For an H×W input the maps are (512, ⌈H/8⌉, ⌈W/8⌉), (1024, ⌈H/16⌉, ⌈W/16⌉) and (2048, ⌈H/32⌉, ⌈W/32⌉).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for index, (blocks, width) in enumerate(zip(RESNET50_BLOCKS, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(in_ch, width, stride if b == 0 else 1))
                in_ch = width * 4
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c2, c3, c4


class FPN(nn.Module):
    """Feature pyramid: 1×1 lateral convs to 256 channels, top-down nearest upsampling and 3×3 merges."""

    def __init__(self, in_channels: tuple[int, int, int] = (512, 1024, 2048), out_ch: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.output1 = conv_bn(in_channels[0], out_ch, 1, relu=True)
        self.output2 = conv_bn(in_channels[1], out_ch, 1, relu=True)
        self.output3 = conv_bn(in_channels[2], out_ch, 1, relu=True)
        self.merge1 = conv_bn(out_ch, out_ch, 3, relu=True)
        self.merge2 = conv_bn(out_ch, out_ch, 3, relu=True)

    def forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.output3(c4)
        # legacy 'nearest' (source index floor(dst·in/out)) to the exact finer size: odd maps (47 → 94 rows of a
        # 750-px side) must repeat the same rows as the released model did, which 'nearest-exact' would not
        p2 = self.merge2(self.output2(c3) + F.interpolate(p3, size=c3.shape[-2:], mode="nearest"))
        p1 = self.merge1(self.output1(c2) + F.interpolate(p2, size=c2.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Single-stage headless context module: 3×3, 5×5 and 7×7 receptive fields (as stacked 3×3 convs),
    concatenated to `out_ch` channels and passed through a ReLU."""

    def __init__(self, in_ch: int = FPN_CHANNELS, out_ch: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.conv3X3 = conv_bn(in_ch, out_ch // 2, 3, relu=False)
        self.conv5X5_1 = conv_bn(in_ch, out_ch // 4, 3, relu=True)
        self.conv5X5_2 = conv_bn(out_ch // 4, out_ch // 4, 3, relu=False)
        self.conv7X7_2 = conv_bn(out_ch // 4, out_ch // 4, 3, relu=True)
        self.conv7x7_3 = conv_bn(out_ch // 4, out_ch // 4, 3, relu=False)  # lower-case x: the released key name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class Head(nn.Module):
    """A 1×1 conv predicting `values` numbers for each of the cell's anchors, flattened to (B, H·W·anchors, values)
    in row-major cell order with a cell's anchors adjacent."""

    def __init__(self, values: int, in_ch: int = FPN_CHANNELS, anchors: int = ANCHORS_PER_CELL) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_ch, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace-R50 (the released configuration: FPN and SSH width 256, 2 anchors per cell, 3 levels).

    forward: (B, 3, H, W) BGR − (104, 117, 123) → (loc (B, A, 4), conf (B, A, 2) softmaxed, landms (B, A, 10)).
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN()
        self.ssh1 = SSH()
        self.ssh2 = SSH()
        self.ssh3 = SSH()
        self.ClassHead = nn.ModuleList([Head(2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([Head(4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([Head(10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(*self.body(x))
        features = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], dim=1)
        landms = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return loc, F.softmax(logits, dim=-1), landms
