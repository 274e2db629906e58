"""Batch augmentations for training (distillation, pruning recovery, QAT, the sample teachers).

They work on whole batches with tensor indexing (no per-image Python loop): on 2 cores a
per-image loop cost more than the forward pass of a small student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from squeeze.errors import UserInputError

# none: as is; shift: translate up to 2 px (never flip digits: a flipped digit is another symbol);
# crop-flip: the standard CIFAR recipe, 4-px padded random crop + horizontal flip. The 8x8 digits get
# none: 2 px is a quarter of their width.
AUGMENTATIONS = ("none", "shift", "crop-flip")
DATASET_DEFAULTS = {"mnist": "shift", "digits": "none", "cifar10": "crop-flip", "cifar10-mini": "crop-flip"}


def default_augment(dataset_name: str | None) -> str:
    """The augmentation a dataset gets unless the recipe names one (recorded in the manifest)."""
    return DATASET_DEFAULTS.get(dataset_name or "", "none")


def check_augment(name: str) -> str:
    if name not in AUGMENTATIONS and name != "auto":
        raise UserInputError(f"--augment must be one of {', '.join(AUGMENTATIONS)} or auto, got {name!r}")
    return name


def resolve_augment(name: str, dataset_name: str | None) -> str:
    """'auto' means the dataset's default; anything else is taken as given."""
    return default_augment(dataset_name) if check_augment(name) == "auto" else name


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of a batch by up to max_shift pixels, padding with the batch minimum."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=float(x.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random crop of each image from its zero-padded copy (zero is the mean pixel after
    normalisation), then a horizontal flip with probability 1/2, all by one gather."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4).permute(0, 2, 3, 1)  # N, H+2p, W+2p, C
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    if flip:
        flipped = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def apply_augment(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if name == "none" or x.ndim != 4:
        return x
    if name == "shift":
        return random_shift(x, 2, generator)
    if name == "crop-flip":
        return random_crop_flip(x, 4, generator)
    raise UserInputError(f"unknown augmentation {name!r} (known: {', '.join(AUGMENTATIONS)})")
