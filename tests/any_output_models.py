"""Models whose output is not class logits, on real MNIST digits (the bundled 10k test set), for the
"any output" tests: a per-pixel foreground segmenter (a small encoder-decoder with a skip, output
2x28x28) and a box regressor that finds a real digit pasted at a seeded random place on a 56x56
canvas (a dict model: {"box": its tight box / 56, "digit": class logits}). Their factories are named
with --arch (the CLI runs from this directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint
from squeeze.io.readers import MNIST_MEAN, MNIST_STD, load_mnist

FOREGROUND = 0.5  # a pixel whose raw intensity (0..1) is above this is the digit
CANVAS = 56


class ConvBN(nn.Module):
    """3x3 conv, BatchNorm, ReLU: a block (prune's layer distillation matches blocks to the unpruned model's)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


_conv = ConvBN


class SegNet(nn.Module):
    """Encoder (28 -> 14) and decoder (14 -> 28) with a skip from the first stage; 2 classes per pixel."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.enc1 = _conv(1, width)
        self.enc2 = nn.Sequential(_conv(width, 2 * width, 2), _conv(2 * width, 2 * width))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = _conv(3 * width, width)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        return self.head(self.dec(torch.cat([self.up(self.enc2(skip)), skip], 1)))


class BoxNet(nn.Module):
    """Three strided stages, a shared fully connected layer, and two heads: the box and the digit's class."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(_conv(1, width, 2), _conv(width, 2 * width, 2), _conv(2 * width, 4 * width, 2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 7 * 7, 64), nn.ReLU())
        self.box = nn.Linear(64, 4)
        self.digit = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(self.features(x))
        return {"box": self.box(h), "digit": self.digit(h)}


def seg_net(width: int = 16) -> SegNet:
    return SegNet(width)


def box_net(width: int = 8) -> BoxNet:
    return BoxNet(width)


def segmentation_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n real MNIST digits (normalised as usual) and their foreground masks (N, 28, 28) of 0/1."""
    x, _, _ = load_mnist()
    x = x[:n]
    raw = x * MNIST_STD + MNIST_MEAN
    return x.numpy(), (raw[:, 0] > FOREGROUND).numpy().astype(np.int64)


def box_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of the first n real MNIST digits pasted at a seeded random place on a 56x56 canvas (normalised as
    MNIST), its tight box (x0, y0, x1, y1) / 56 as a float regression target, and its class."""
    x, y, _ = load_mnist()
    raw = (x[:n, 0] * MNIST_STD + MNIST_MEAN).clamp(0, 1).numpy()
    rng = np.random.default_rng(seed)
    canvas = np.zeros((n, 1, CANVAS, CANVAS), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for i, digit in enumerate(raw):
        top, left = rng.integers(0, CANVAS - 28 + 1, size=2)
        canvas[i, 0, top:top + 28, left:left + 28] = digit
        rows, cols = np.nonzero(digit > FOREGROUND)
        boxes[i] = [left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1]
    return (canvas - MNIST_MEAN) / MNIST_STD, boxes / CANVAS, y[:n].numpy()


def train(model: nn.Module, x: np.ndarray, loss_fn, epochs: int, batch: int = 64, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """A few epochs of Adam on (x, targets...) batches; loss_fn(output, *targets) -> loss."""
    torch.manual_seed(seed)
    xs = torch.from_numpy(x)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * (len(xs) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(xs) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = loss_fn(model(xs[idx]), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def seg_teacher(directory: Path, n: int = 3000, epochs: int = 3) -> tuple[Path, Path]:
    """A trained segmenter checkpoint and its .npz (x, per-pixel labels y)."""
    x, masks = segmentation_data(n)
    labels = torch.from_numpy(masks)
    torch.manual_seed(0)  # the initial weights too: the same teacher in every process
    model = train(seg_net(), x, lambda out, idx: F.cross_entropy(out, labels[idx]), epochs)
    ckpt, data = directory / "seg.pt", directory / "seg.npz"
    save_checkpoint(model, ckpt, arch="any_output_models:seg_net", arch_kwargs={}, input_spec=InputSpec((1, 1, 28, 28)))
    np.savez(data, x=x, y=masks)
    return ckpt, data


def box_teacher(directory: Path, n: int = 3000, epochs: int = 6) -> tuple[Path, Path]:
    """A trained box regressor (dict output) checkpoint and its .npz (x, float box targets y)."""
    x, boxes, digits = box_data(n)
    targets, classes = torch.from_numpy(boxes), torch.from_numpy(digits)

    def loss(out, idx):
        return 10 * F.smooth_l1_loss(out["box"], targets[idx], beta=0.02) + 0.1 * F.cross_entropy(out["digit"], classes[idx])

    torch.manual_seed(0)
    model = train(box_net(), x, loss, epochs)
    ckpt, data = directory / "box.pt", directory / "box.npz"
    save_checkpoint(model, ckpt, arch="any_output_models:box_net", arch_kwargs={}, input_spec=InputSpec((1, 1, CANVAS, CANVAS)))
    np.savez(data, x=x, y=boxes)
    return ckpt, data
