"""A corpus of real architectures, written after torchvision's layouts (timm's for one ViT) at small width
and CIFAR resolution, to run through squeeze's passes (tests/test_arch_corpus.py). Not squeeze's zoo:
module names, block structure and forward code follow the originals (in-place ReLUs, functional pooling,
torch.flatten, layer scale as a bare parameter, stochastic depth as a module), so a pass meets what a
user's torchvision/timm model would give it. torchvision and timm themselves are not installable here.

ARCHS: name -> Arch (factory, input shape, classes); arch_corpus_more.py holds the second half."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from arch_corpus_more import (ConvNeXt, Conv2dNormActivation, DenseNet, RegNet, SqueezeExcitation, StochasticDepth, TimmViT, VGG,
                              VisionTransformer, make_divisible)

# ---- ResNet (torchvision.models.resnet: conv1/bn1/relu/maxpool/layer1..4/avgpool/fc, downsample Sequential) ----


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet V1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], num_classes: int = 10, width: int = 16):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 10) -> ResNet:
    return ResNet(Bottleneck, [2, 1, 1, 1], num_classes, width=8)  # ResNet-50 is [3, 4, 6, 3] at width 64


# ---- MobileNetV2 (torchvision.models.mobilenetv2: features / classifier, InvertedResidual, ReLU6) ----


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, 1, activation_layer=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden_dim, hidden_dim, 3, stride, groups=hidden_dim, activation_layer=nn.ReLU6),
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width_mult: float = 0.25, last_channel: int = 256, dropout: float = 0.2):
        super().__init__()
        # (t, c, n, s) of torchvision's MobileNetV2, one block per stage but two in stage 2 (n is 1, 2, 3, 4, 3, 3, 1 there)
        settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2], [6, 64, 1, 2], [6, 96, 1, 1], [6, 160, 1, 2], [6, 320, 1, 1]]
        input_channel = make_divisible(32 * width_mult)
        features: list[nn.Module] = [Conv2dNormActivation(3, input_channel, stride=2, activation_layer=nn.ReLU6)]
        for t, c, n, s in settings:
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, last_channel, 1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---- MobileNetV3-Small (torchvision.models.mobilenetv3: hardswish, SE with hardsigmoid gate) ----


@dataclass(frozen=True)
class BneckConf:
    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int


class InvertedResidualV3(nn.Module):
    def __init__(self, cnf: BneckConf):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1, activation_layer=act))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, cnf.stride,
                                           groups=cnf.expanded_channels, activation_layer=act))
        if cnf.use_se:
            layers.append(SqueezeExcitation(cnf.expanded_channels, make_divisible(cnf.expanded_channels // 4, 8),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10, last_channel: int = 128, dropout: float = 0.2):
        super().__init__()
        confs = [BneckConf(16, 3, 16, 16, True, False, 2), BneckConf(16, 3, 48, 24, False, False, 2), BneckConf(24, 3, 56, 24, False, False, 1),
                 BneckConf(24, 5, 64, 40, True, True, 2), BneckConf(40, 5, 120, 40, True, True, 1), BneckConf(40, 5, 96, 48, True, True, 1)]
        layers: list[nn.Module] = [Conv2dNormActivation(3, 16, 3, 2, activation_layer=nn.Hardswish)]
        layers += [InvertedResidualV3(c) for c in confs]
        lastconv = 6 * confs[-1].out_channels
        layers.append(Conv2dNormActivation(confs[-1].out_channels, lastconv, 1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(lastconv, last_channel), nn.Hardswish(inplace=True), nn.Dropout(p=dropout, inplace=True),
                                        nn.Linear(last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- EfficientNet-B0 (torchvision.models.efficientnet: MBConv, SiLU, SE, stochastic depth) ----


class MBConv(nn.Module):
    def __init__(self, expand_ratio: int, kernel: int, stride: int, input_channels: int, out_channels: int, sd_prob: float):
        super().__init__()
        self.use_res_connect = stride == 1 and input_channels == out_channels
        expanded = make_divisible(input_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != input_channels:
            layers.append(Conv2dNormActivation(input_channels, expanded, 1, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, input_channels // 4), activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(expanded, out_channels, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


class EfficientNet(nn.Module):
    # (expand, kernel, stride, in, out, layers) of B0; channels scaled by width_mult, one block per stage but two in stage 2
    B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 1), (6, 3, 2, 40, 80, 1), (6, 5, 1, 80, 112, 1),
          (6, 5, 2, 112, 192, 1), (6, 3, 1, 192, 320, 1)]

    def __init__(self, num_classes: int = 10, width_mult: float = 0.25, stochastic_depth_prob: float = 0.2, dropout: float = 0.2):
        super().__init__()
        stem = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [Conv2dNormActivation(3, stem, 3, 2, activation_layer=nn.SiLU)]
        total, block_id = sum(c[-1] for c in self.B0), 0
        for expand, kernel, stride, cin, cout, n in self.B0:
            stage = []
            for i in range(n):
                cin_i = make_divisible(cin * width_mult) if i == 0 else make_divisible(cout * width_mult)
                stage.append(MBConv(expand, kernel, stride if i == 0 else 1, cin_i, make_divisible(cout * width_mult),
                                    stochastic_depth_prob * block_id / total))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = make_divisible(self.B0[-1][4] * width_mult)
        layers.append(Conv2dNormActivation(last_in, 4 * last_in, 1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(4 * last_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- the registry ----


@dataclass(frozen=True)
class Arch:
    """One corpus entry: its factory (called with num_classes, plus image_size when `sized`), input shape (C, H, W), classes."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    sized: bool = False  # the factory takes image_size=(H, W) (the position embedding's length depends on it)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        extra = {"image_size": self.input_shape[1:]} if self.sized else {}
        return self.factory(num_classes=self.num_classes, **extra, **self.kwargs).eval()


ARCHS: dict[str, Arch] = {
    "ResNet-18": Arch(resnet18),
    "ResNet-50": Arch(resnet50, input_shape=(3, 32, 48)),  # a non-square input
    "MobileNetV2": Arch(MobileNetV2),
    "MobileNetV3-Small": Arch(MobileNetV3),
    "EfficientNet-B0": Arch(EfficientNet),
    "RegNetY": Arch(RegNet),
    "ConvNeXt": Arch(ConvNeXt, input_shape=(3, 32, 48)),
    "VGG-11-BN": Arch(VGG, num_classes=100),  # a class count other than 10
    "DenseNet": Arch(DenseNet, num_classes=100),
    "ViT (torchvision)": Arch(VisionTransformer, sized=True),
    "ViT (timm)": Arch(TimmViT, input_shape=(3, 32, 48), sized=True),
}
