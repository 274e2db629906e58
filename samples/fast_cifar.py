"""The airbench94 training recipe (Jordan, 2024, arXiv:2404.00498) for the CIFAR-10 sample teacher, on a CPU.

What carries over from the paper: the frozen patch-whitening first layer (eigenvectors of 2x2 patch
covariance, bias trained for the first epochs only), Dirac-initialised convs, BatchNorm without a trained
scale, Nesterov SGD in decoupled form (learning rate and weight decay per 1024 examples, norm biases at 64x
the rate), a summed loss, warm-up then linear decay, and Lookahead (an EMA pulled into the weights every 5
steps, its decay ramping to 0.95^5). What differs: no label smoothing (it makes teachers worse distillers,
Mueller et al., 2019), no test-time augmentation (the packaged model is what is measured), per-image random
flips rather than alternating ones, 4-px translation and 12-px cutout for the longer schedule (airbench96's
augmentation: at 30 epochs with 2-px translation alone the train loss fell to 0.05), and bf16 autocast where the CPU has native bf16 (AMX/AVX512-BF16: 2.4x the
fp32 images/s for this net on 2 cores here), with fp32 master weights and fp32 evaluation.

Training saves its whole state after every epoch (resumable with the same command).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.io.augment import random_crop_flip
from squeeze.io.fsutil import atomic_path

MOMENTUM = 0.85
BIAS_SCALER = 64.0  # learning-rate multiplier of the BatchNorm biases (not of their weight decay)
WHITEN_BIAS_EPOCHS = 3
LOOKAHEAD_EVERY = 5
WHITEN_EPS = 5e-4


def bf16_available() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero (the mean pixel after normalisation) a size x size square of each image, at a random place inside it."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n, 1, 1), generator=generator)
    left = torch.randint(0, w - size + 1, (n, 1, 1), generator=generator)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def init_whitening(conv: nn.Conv2d, images: torch.Tensor) -> None:
    """Set the first conv to whiten its input patches: the patch covariance's eigenvectors scaled by
    1/sqrt(eigenvalue), and their negatives (so a following GELU keeps both signs)."""
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0).reshape(c * h * w, c, h, w)
    scaled = (eigenvectors / torch.sqrt(eigenvalues + WHITEN_EPS).view(-1, 1, 1, 1)).float()
    with torch.no_grad():
        conv.weight.copy_(torch.cat((scaled, -scaled)))
        conv.bias.zero_()
    conv.weight.requires_grad_(False)


def init_network(model: nn.Sequential, train_x: torch.Tensor) -> None:
    whiten = model[0]
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module is not whiten:
            with torch.no_grad():
                nn.init.dirac_(module.weight[: module.weight.size(1)])  # start each conv near the identity
        if isinstance(module, nn.BatchNorm2d):
            module.weight.requires_grad_(False)  # scale fixed at 1; only the bias trains
    init_whitening(whiten, train_x[:5000])


def param_groups(model: nn.Module, lr: float, wd: float) -> list[dict[str, Any]]:
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "norm" not in n and (p.requires_grad or n == "0.bias")]
    lr_bias = lr * BIAS_SCALER
    return [dict(params=norm_biases, lr=lr_bias, weight_decay=wd / lr_bias, base_lr=lr_bias),
            dict(params=others, lr=lr, weight_decay=wd / lr, base_lr=lr)]


def lr_factor(step: int, total: int) -> float:
    """0.2 -> 1.0 over the first 23 % of steps, then linearly down to 0.07."""
    warm = int(total * 0.23)
    if step < warm:
        return 0.2 + 0.8 * step / warm
    return 1.0 - 0.93 * (step - warm) / (total - warm)


class Lookahead:
    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor] | None = None):
        self.ema = state or {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def update(self, model: nn.Module, decay: float) -> None:
        with torch.no_grad():
            current = model.state_dict()
            for name, ema in self.ema.items():
                ema.lerp_(current[name], 1 - decay)
                current[name].copy_(ema)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def train(recipe: Any, model: nn.Sequential, train_xy: tuple[torch.Tensor, torch.Tensor],
          cal_xy: tuple[torch.Tensor, torch.Tensor], state_path: Path) -> dict[str, Any]:
    """Train `model` in place by the airbench recipe; returns the training figures (the caller measures eval)."""
    x_train, y_train = train_xy
    torch.manual_seed(recipe.seed)
    init_network(model, x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(recipe.seed))])
    kilostep = 1024 * (1 + 1 / (1 - MOMENTUM))  # Nesterov's step-size gain, so lr means the same at any momentum
    lr, wd = recipe.lr / kilostep, recipe.weight_decay * recipe.batch_size / kilostep
    opt = torch.optim.SGD(param_groups(model, lr, wd), momentum=MOMENTUM, nesterov=True)
    per_epoch = len(x_train) // recipe.batch_size
    total = recipe.epochs * per_epoch
    lookahead, start_epoch, elapsed = Lookahead(model), 0, 0.0
    state = torch.load(state_path, weights_only=True) if state_path.exists() else None
    if state is not None and state.get("recipe") != asdict(recipe):
        print(f"[{recipe.name}] {state_path} was saved by another recipe: starting over", flush=True)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        lookahead = Lookahead(model, state["ema"])
        start_epoch, elapsed = state["epoch"], state["elapsed"]
        print(f"[{recipe.name}] resuming after epoch {start_epoch}", flush=True)
    autocast = recipe.autocast == "bf16" and bf16_available()
    step_model = torch.compile(model) if recipe.compile else model
    for epoch in range(start_epoch, recipe.epochs):
        began, running = time.time(), 0.0
        model.train()
        model[0].bias.requires_grad_(epoch < WHITEN_BIAS_EPOCHS)
        gen = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=gen)
        for b in range(per_epoch):
            step = epoch * per_epoch + b
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = cutout(random_crop_flip(x_train[idx], recipe.max_shift, gen), recipe.cutout, gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = step_model(x)
            loss = F.cross_entropy(logits.float(), y_train[idx], label_smoothing=recipe.label_smoothing, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, total)
            opt.step()
            running += loss.item() / len(idx)
            if (step + 1) % LOOKAHEAD_EVERY == 0:
                lookahead.update(model, 0.95**5 * ((step + 1) / total) ** 3)
        if epoch + 1 == recipe.epochs:
            lookahead.update(model, 1.0)  # the weights that ship are the average's
        elapsed += time.time() - began
        cal = accuracy(model, *cal_xy)  # progress only; the eval split is read once, by the caller
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": lookahead.ema, "epoch": epoch + 1,
                        "elapsed": elapsed, "recipe": asdict(recipe)}, tmp)
        rate = per_epoch * recipe.batch_size / max(time.time() - began, 1e-9)
        print(f"[{recipe.name}] epoch {epoch + 1}/{recipe.epochs} loss {running / per_epoch:.4f} cal acc {cal:.4f} "
              f"{rate:.0f} img/s ({elapsed:.0f}s)", flush=True)
    return {"train_seconds": round(elapsed, 1), "threads": torch.get_num_threads(), "autocast": "bf16" if autocast else "none"}
