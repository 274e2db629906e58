"""Sample architectures defined in the project (torchvision is unavailable with CPU torch here).

Sized like real edge teachers relative to 28x28 digits: tens of MMACs per image, so that
search, pruning and quantization have room to show. Factories are referenced by name
("squeeze.zoo:resnet_teacher") from squeeze checkpoints, so keep their signatures stable.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kernel: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style classifier: stem, stages of basic blocks, global pooling, linear head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks: tuple[int, ...] = (2, 2, 2),
        stem_stride: int = 1,
    ):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, widths[0], 3, stem_stride)
        stages = []
        cin = widths[0]
        for i, (width, depth) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(cin, width, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise kxk, 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int = 3):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu(cin, hidden, 1))
        layers.append(_conv_bn_relu(hidden, hidden, kernel, stride, groups=hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


# (expansion, out channels, repeats, first stride) per stage, MobileNetV2 paper layout adapted to 28x28.
MOBILENETV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 1),
    (6, 40, 3, 2),
    (6, 80, 3, 2),
    (6, 112, 2, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2-style classifier with ReLU (not ReLU6: it quantizes cleaner) and a 1x1 feature head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width_mult: float = 1.0,
        stages: tuple[tuple[int, int, int, int], ...] = MOBILENETV2_STAGES,
        stem_channels: int = 24,
        head_channels: int = 512,
    ):
        super().__init__()

        def scaled(c: int) -> int:
            return max(8, int(round(c * width_mult / 8)) * 8)

        cin = scaled(stem_channels)
        self.stem = _conv_bn_relu(in_channels, cin, 3, 1)
        blocks = []
        for expansion, cout, repeats, stride in stages:
            cout = scaled(cout)
            for r in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if r == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = _conv_bn_relu(cin, scaled(head_channels), 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(scaled(head_channels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def resnet_teacher(in_channels: int = 1, num_classes: int = 10) -> ResNet:
    """The ResNet-style sample teacher (about 80 MMACs at 28x28)."""
    return ResNet(in_channels, num_classes, widths=(32, 64, 128), blocks=(2, 2, 2))


def mobilenetv2_teacher(in_channels: int = 1, num_classes: int = 10) -> MobileNetV2:
    """The MobileNetV2-style sample teacher (about 46 MMACs at 28x28)."""
    return MobileNetV2(in_channels, num_classes, width_mult=1.0)


def tiny_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 8) -> nn.Module:
    """A very small CNN for fast tests."""
    return nn.Sequential(
        _conv_bn_relu(in_channels, width, 3, 2),
        _conv_bn_relu(width, width * 2, 3, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width * 2, num_classes),
    )


def cifar_resnet(in_channels: int = 3, num_classes: int = 10, depth: int = 20, width: int = 16) -> ResNet:
    """He et al.'s CIFAR ResNet family (depth = 6n + 2: ResNet-8/14/20/32/56): three stages of n
    basic blocks at widths w/2w/4w, a 3x3 stem, no max-pool. Shortcuts that change shape are 1x1
    projections (option B), which the pruning dependency graph handles like any conv."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32, 56, ...), got {depth}")
    n = (depth - 2) // 6
    return ResNet(in_channels, num_classes, widths=(width, 2 * width, 4 * width), blocks=(n, n, n))


def resnet20_cifar(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """The CIFAR-10 sample teacher: ResNet-20 (about 41 MMACs at 32x32, 0.27 M params)."""
    return cifar_resnet(in_channels, num_classes, depth=20, width=16)


class Scale(nn.Module):
    """Multiply by a constant (the airbench head's 1/9: it sets the logits' scale the recipe is tuned for)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class ConvGroup(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU (the airbench block: pooling before the norm halves
    the work of the first norm and activation)."""

    def __init__(self, cin: int, cout: int, bn_momentum: float = 0.4):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


def airbench_cifar(in_channels: int = 3, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256)) -> nn.Sequential:
    """The CIFAR-10 sample teacher: the airbench94 network (Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds on a
    single GPU"): a 2x2 patch-whitening conv, three conv groups, global max-pool, a linear head (about 118 MMACs
    at 32x32, 1.97 M params). Chosen over ResNet-20 because it reaches > 90 % in about 15 epochs, which a 2-core
    CPU trains in under half an hour; ResNet-20 stalled at 88.5 % after 160 epochs here."""
    whiten = 2 * in_channels * 2 * 2  # the patch eigenvectors and their negatives
    return nn.Sequential(
        nn.Conv2d(in_channels, whiten, 2, bias=True),
        nn.GELU(),
        ConvGroup(whiten, widths[0]),
        ConvGroup(widths[0], widths[1]),
        ConvGroup(widths[1], widths[2]),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[2], num_classes, bias=False),
        Scale(1 / 9),
    )
