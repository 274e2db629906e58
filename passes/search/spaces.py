"""Search spaces: typed genomes that decode to a student spec and build an nn.Module.

A space is a list of genes, each a tuple of options ordered cheapest first (so the genome of
first options is the smallest architecture, which `squeeze search` measures to tell an
impossible budget from a hard one), a `decode` from genome to the keyword arguments of a
`squeeze.*` factory, and a validity rule. What the search writes is the decoded spec,
`{"arch": "<factory>", "kwargs": {...}}`, the student JSON that `squeeze distill --student`
loads; input channels and classes are filled in from the teacher when the student is built.

Built-in spaces: `resnet` (stages x basic blocks, widths, kernel 3/5, stride placement) and
`mobilenetv2` (width multiplier, expansion, kernel, depth per stage, optional squeeze-excite).
A user space is `pkg.mod:name`, naming a `SearchSpace` (or a function returning one).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from squeeze.io.data import import_object
from squeeze.errors import UserInputError
from squeeze.zoo import BasicBlock

Genome = dict[str, Any]


@dataclass(frozen=True)
class Gene:
    name: str
    options: tuple[Any, ...]  # cheapest first
    role: str = ""  # "channels": a width, aligned to the target's block; "multiple": the rounding a factory gives derived widths

    def __post_init__(self) -> None:
        if not self.options:
            raise UserInputError(f"gene {self.name!r} has no options")


@dataclass(frozen=True)
class SearchSpace:
    """Genes + decode to factory kwargs. Mutation and crossover work on genomes; identity is the decoded spec."""

    name: str
    factory: str  # "pkg.mod:fn"; fn(in_channels=..., num_classes=..., **decode(genome)) -> nn.Module
    genes: tuple[Gene, ...]
    decode: Callable[[Genome], dict[str, Any]]
    valid: Callable[[Genome], bool] = field(default=lambda genome: True)
    description: str = ""

    channel_multiple: int = 1  # the width alignment `aligned` applied

    def __post_init__(self) -> None:
        names = [g.name for g in self.genes]
        if len(set(names)) != len(names):
            raise UserInputError(f"space {self.name!r} has duplicate gene names")

    def aligned(self, multiple: int) -> SearchSpace:
        """This space with every width a multiple of `multiple` (the target's kernel block: on AVX-512 an 8-channel conv
        ran no faster than a 16-channel one, bench/channel_alignment.py): aligned options kept, else rounded up."""
        if multiple <= 1:
            return self

        def options(gene: Gene) -> tuple[Any, ...]:
            if gene.role == "channels":
                return tuple(o for o in gene.options if o % multiple == 0) or tuple(sorted({-(-o // multiple) * multiple for o in gene.options}))
            return tuple(sorted({max(o, multiple) for o in gene.options})) if gene.role == "multiple" else gene.options
        genes = tuple(Gene(g.name, options(g), g.role) for g in self.genes)
        return SearchSpace(self.name, self.factory, genes, self.decode, self.valid, self.description, multiple)

    # -- genomes ---------------------------------------------------------------------------

    def smallest(self) -> Genome:
        """The first option of every gene: the cheapest architecture (options are ordered cheapest first)."""
        genome = {g.name: g.options[0] for g in self.genes}
        if not self.valid(genome):
            raise UserInputError(f"space {self.name!r}: the genome of first options is not valid; order options cheapest first")
        return genome

    def key(self, genome: Genome) -> str:
        """Canonical identity: the decoded spec, so genomes differing only in unused genes are one architecture."""
        return json.dumps({"arch": self.factory, "kwargs": self.decode(genome)}, sort_keys=True, separators=(",", ":"))

    def sample(self, rng: random.Random, max_tries: int = 1000) -> Genome:
        for _ in range(max_tries):
            genome = {g.name: rng.choice(g.options) for g in self.genes}
            if self.valid(genome):
                return genome
        raise UserInputError(f"space {self.name!r}: no valid genome in {max_tries} random draws")

    def mutate(self, genome: Genome, rng: random.Random, max_tries: int = 50) -> Genome:
        """Change one gene (to a neighbouring option half the time, else to any); retried until the architecture changes."""
        key = self.key(genome)
        mutable = [g for g in self.genes if len(g.options) > 1]
        if not mutable:
            return dict(genome)
        for _ in range(max_tries):
            gene = rng.choice(mutable)
            i = gene.options.index(genome[gene.name])
            if rng.random() < 0.5:
                j = min(len(gene.options) - 1, max(0, i + rng.choice((-1, 1))))
            else:
                j = rng.randrange(len(gene.options))
            child = {**genome, gene.name: gene.options[j]}
            if self.valid(child) and self.key(child) != key:
                return child
        return dict(genome)

    def crossover(self, a: Genome, b: Genome, rng: random.Random, max_tries: int = 20) -> Genome:
        """Uniform crossover: each gene from either parent."""
        for _ in range(max_tries):
            child = {g.name: (a if rng.random() < 0.5 else b)[g.name] for g in self.genes}
            if self.valid(child):
                return child
        return dict(a)

    # -- specs and modules -----------------------------------------------------------------

    def spec(self, genome: Genome) -> dict[str, Any]:
        """The student JSON: {"arch": factory, "kwargs": decoded genome} (channels/classes come from the teacher)."""
        return {"arch": self.factory, "kwargs": self.decode(genome)}

    def build(self, genome: Genome, in_channels: int, num_classes: int) -> nn.Module:
        from squeeze.io.students import build_student

        module, _ = build_student(self.factory, self.decode(genome), in_channels, num_classes)
        return module

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "factory": self.factory, "description": self.description, "channel_multiple": self.channel_multiple,
                "genes": {g.name: list(g.options) for g in self.genes}}


# ----------------------------------------------------------------------------------------------
# ResNet-style space


class SearchResNet(nn.Module):
    """Stem, stages of basic blocks (each stage its own width, depth, kernel and stride), global pool, linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem_width: int = 16, stem_stride: int = 1,
                 widths: list[int] | tuple[int, ...] = (16, 32, 64), blocks: list[int] | tuple[int, ...] = (1, 1, 1),
                 kernels: list[int] | tuple[int, ...] = (3, 3, 3), strides: list[int] | tuple[int, ...] = (1, 2, 2)):
        super().__init__()
        if not (len(widths) == len(blocks) == len(kernels) == len(strides)) or not widths:
            raise ValueError("widths, blocks, kernels and strides need one entry per stage")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem_width),
                                  nn.ReLU(inplace=True))
        stages, cin = [], stem_width
        for width, depth, kernel, stride in zip(widths, blocks, kernels, strides):
            layers = [BasicBlock(cin, width, stride=stride, kernel=kernel)]
            layers += [BasicBlock(width, width, kernel=kernel) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def build_resnet(in_channels: int = 1, num_classes: int = 10, **kwargs: Any) -> SearchResNet:
    """Factory named by student specs of the `resnet` space."""
    return SearchResNet(in_channels, num_classes, **kwargs)


RESNET_MAX_STAGES = 4
RESNET_WIDTHS = (8, 16, 24, 32, 48, 64, 96, 128)


def _resnet_decode(genome: Genome) -> dict[str, Any]:
    n = int(genome["stages"])
    return {
        "stem_width": int(genome["stem_width"]),
        "stem_stride": int(genome["stem_stride"]),
        "widths": [int(genome[f"width{i}"]) for i in range(1, n + 1)],
        "blocks": [int(genome[f"blocks{i}"]) for i in range(1, n + 1)],
        "kernels": [int(genome[f"kernel{i}"]) for i in range(1, n + 1)],
        "strides": [int(genome[f"stride{i}"]) for i in range(1, n + 1)],
    }


def _resnet_valid(genome: Genome) -> bool:
    # At least 4x downsampling overall: full-resolution students cost more than the teacher and are never wanted.
    # Stage widths never shrink with depth (issue 19: shapes like 48-24-96 are no practitioner's network).
    spec = _resnet_decode(genome)
    total = spec["stem_stride"]
    for s in spec["strides"]:
        total *= s
    widths = spec["widths"]
    return total >= 4 and all(a <= b for a, b in zip(widths, widths[1:]))


def resnet_space() -> SearchSpace:
    genes = [Gene("stages", (1, 2, 3, 4)), Gene("stem_width", (8, 16, 24, 32), "channels"), Gene("stem_stride", (2, 1))]
    for i in range(1, RESNET_MAX_STAGES + 1):
        genes += [Gene(f"width{i}", RESNET_WIDTHS, "channels"), Gene(f"blocks{i}", (1, 2, 3)), Gene(f"kernel{i}", (3, 5)), Gene(f"stride{i}", (2, 1))]
    return SearchSpace(
        name="resnet",
        factory="squeeze.passes.search.spaces:build_resnet",
        genes=tuple(genes),
        decode=_resnet_decode,
        valid=_resnet_valid,
        description="ResNet-style: 1-4 stages of 1-3 basic blocks, widths 8-128 non-decreasing, kernel 3/5, stride 1/2 per stage and "
                    "stem (>= 4x downsampling)",
    )


# ----------------------------------------------------------------------------------------------
# MobileNetV2-style space


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al.): global pool, bottleneck, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidualSE(nn.Module):
    """MobileNetV2 block (1x1 expand, depthwise kxk, optional SE, 1x1 linear projection), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int, se: bool):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [_conv_bn_relu(cin, hidden)] if expansion != 1 else []
        layers.append(_conv_bn_relu(hidden, hidden, kernel, stride, groups=hidden))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


# (base channels, stride) per stage: the sample MobileNetV2 teacher's layout (squeeze.zoo.MOBILENETV2_STAGES).
MOBILENETV2_LAYOUT = ((16, 1), (24, 1), (40, 2), (80, 2), (112, 1))


class SearchMobileNetV2(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0, stem_stride: int = 1,
                 head_channels: int = 512, expansions: list[int] | tuple[int, ...] = (1, 4, 6, 6, 6),
                 depths: list[int] | tuple[int, ...] = (1, 2, 3, 3, 2), kernels: list[int] | tuple[int, ...] = (3, 3, 3, 3, 3),
                 se: list[bool] | tuple[bool, ...] = (False,) * 5, channel_multiple: int = 8):
        super().__init__()
        if not (len(expansions) == len(depths) == len(kernels) == len(se) == len(MOBILENETV2_LAYOUT)):
            raise ValueError(f"expansions, depths, kernels and se need {len(MOBILENETV2_LAYOUT)} entries (one per stage)")

        def scaled(c: int) -> int:
            return max(channel_multiple, int(round(c * width_mult / channel_multiple)) * channel_multiple)

        cin = scaled(24)
        self.stem = _conv_bn_relu(in_channels, cin, 3, stem_stride)
        blocks = []
        for (channels, stride), expansion, depth, kernel, use_se in zip(MOBILENETV2_LAYOUT, expansions, depths, kernels, se):
            cout = scaled(channels)
            for r in range(depth):
                blocks.append(InvertedResidualSE(cin, cout, stride if r == 0 else 1, expansion, kernel, bool(use_se)))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = _conv_bn_relu(cin, head_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.head_conv(self.blocks(self.stem(x)))), 1))


def build_mobilenetv2(in_channels: int = 1, num_classes: int = 10, **kwargs: Any) -> SearchMobileNetV2:
    """Factory named by student specs of the `mobilenetv2` space."""
    return SearchMobileNetV2(in_channels, num_classes, **kwargs)


def _mobilenetv2_decode(genome: Genome) -> dict[str, Any]:
    stages = range(1, len(MOBILENETV2_LAYOUT) + 1)
    multiple = int(genome.get("channel_multiple", 8))
    return {**({"channel_multiple": multiple} if multiple != 8 else {}),  # the default is left out: specs stay as before
        "width_mult": float(genome["width_mult"]),
        "stem_stride": int(genome["stem_stride"]),
        "head_channels": int(genome["head_channels"]),
        "expansions": [int(genome[f"expansion{i}"]) for i in stages],
        "depths": [int(genome[f"depth{i}"]) for i in stages],
        "kernels": [int(genome[f"kernel{i}"]) for i in stages],
        "se": [bool(genome[f"se{i}"]) for i in stages],
    }


def mobilenetv2_space() -> SearchSpace:
    genes = [Gene("width_mult", (0.25, 0.35, 0.5, 0.75, 1.0)), Gene("stem_stride", (2, 1)), Gene("head_channels", (128, 256, 512), "channels"),
             Gene("channel_multiple", (8,), "multiple")]
    for i in range(1, len(MOBILENETV2_LAYOUT) + 1):
        genes += [Gene(f"expansion{i}", (1, 2, 4, 6)), Gene(f"depth{i}", (1, 2, 3)), Gene(f"kernel{i}", (3, 5)), Gene(f"se{i}", (False, True))]
    return SearchSpace(
        name="mobilenetv2",
        factory="squeeze.passes.search.spaces:build_mobilenetv2",
        genes=tuple(genes),
        decode=_mobilenetv2_decode,
        description="MobileNetV2-style: width x0.25-1, per-stage expansion 1-6, depth 1-3, kernel 3/5, optional SE; 1x1 head 128-512",
    )


# ----------------------------------------------------------------------------------------------
# VGG-style space (the airbench layout): few, wide convs with early pooling; few ops is what a CPU runtime rewards


class SearchConvNet(nn.Module):
    """A 3x3 stem conv, then stages of conv -> max-pool -> BN -> ReLU (pooling before the norm halves its work) and
    0-2 more conv -> BN -> ReLU at the pooled size; global max-pool, linear head."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, stem_width: int = 16,
                 widths: list[int] | tuple[int, ...] = (32, 64, 128), convs: list[int] | tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        if len(widths) != len(convs) or not widths:
            raise ValueError("widths and convs need one entry per stage")
        self.stem = _conv_bn_relu(in_channels, stem_width, 3)
        stages, cin = [], stem_width
        for width, n in zip(widths, convs):
            layers: list[nn.Module] = [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            layers += [_conv_bn_relu(width, width, 3) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def build_convnet(in_channels: int = 3, num_classes: int = 10, **kwargs: Any) -> SearchConvNet:
    """Factory named by student specs of the `convnet` space."""
    return SearchConvNet(in_channels, num_classes, **kwargs)


CONVNET_WIDTHS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def _convnet_decode(genome: Genome) -> dict[str, Any]:
    n = int(genome["stages"])
    return {"stem_width": int(genome["stem_width"]), "widths": [int(genome[f"width{i}"]) for i in range(1, n + 1)],
            "convs": [int(genome[f"convs{i}"]) for i in range(1, n + 1)]}


def _convnet_valid(genome: Genome) -> bool:
    widths = _convnet_decode(genome)["widths"]
    return all(a <= b for a, b in zip(widths, widths[1:]))  # widths grow with depth, as every practitioner's net does


def convnet_space() -> SearchSpace:
    genes = [Gene("stages", (2, 3, 4)), Gene("stem_width", (8, 16, 24, 32), "channels")]
    for i in range(1, 5):
        genes += [Gene(f"width{i}", CONVNET_WIDTHS, "channels"), Gene(f"convs{i}", (1, 2, 3))]
    return SearchSpace(
        name="convnet",
        factory="squeeze.passes.search.spaces:build_convnet",
        genes=tuple(genes),
        decode=_convnet_decode,
        valid=_convnet_valid,
        description="VGG-style (airbench layout): 3x3 stem, 2-4 stages of 1-3 convs with a 2x2 max-pool after the first, "
                    "widths 8-256 non-decreasing, global max-pool",
    )


BUILTIN_SPACES: dict[str, Callable[[], SearchSpace]] = {"resnet": resnet_space, "mobilenetv2": mobilenetv2_space, "convnet": convnet_space}


def get_space(name: str) -> SearchSpace:
    """A built-in space by name, or the user's `pkg.mod:name` (a SearchSpace or a function returning one)."""
    if name in BUILTIN_SPACES:
        return BUILTIN_SPACES[name]()
    if ":" not in name:
        raise UserInputError(f"unknown search space {name!r}; choose from {', '.join(BUILTIN_SPACES)} or give your own as pkg.mod:space")
    obj = import_object(name, "--space")
    if callable(obj) and not isinstance(obj, SearchSpace):
        try:
            obj = obj()
        except Exception as exc:
            raise UserInputError(f"--space {name} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, SearchSpace):
        raise UserInputError(f"--space {name} is a {type(obj).__name__}, not a squeeze.passes.search.spaces.SearchSpace")
    return obj
