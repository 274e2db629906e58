"""The few-shot tier of the search (issue 19): a short distillation of each shortlisted candidate, ranked by
what it learned, so the full distillation goes to the student that trains best, not the one a zero-cost
proxy liked.

Every candidate trains on the same fixed batches (the teacher's logits computed once for all of them), for
the same few hundred steps, from its own seeded initialisation; the score is the candidate's accuracy on a
fixed calibration subset after those steps (agreement with the teacher when the data has no labels), with
the mean training loss over the second half of the run (SoTL-E, Ru et al. 2021) recorded beside it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.io.augment import apply_augment
from squeeze.measure.analysis import evaluating
from squeeze.train import losses
from squeeze.train.precision import autocast


@dataclass(frozen=True)
class FewShotConfig:
    steps: int = 200  # optimizer steps per candidate
    batch_size: int = 128
    lr: float = 0.05
    temperature: float = 4.0
    alpha: float = 0.9  # KD weight; CE on labels gets 1 - alpha
    calibration_samples: int = 1000


@dataclass
class FewShotBatches:
    """The fixed training batches (inputs after augmentation, labels, the teacher's logits) and calibration set."""

    xs: list[torch.Tensor]
    ys: list[torch.Tensor | None]
    teacher_logits: list[torch.Tensor]
    cal_x: torch.Tensor
    cal_target: torch.Tensor  # labels, or the teacher's predictions when the data has none
    labelled: bool
    teacher_seconds: float


@torch.no_grad()
def prepare_batches(teacher: nn.Module, data: Any, cfg: FewShotConfig, augment: str, precision: str, seed: int = 0) -> FewShotBatches:
    """cfg.steps batches from the train split (cycled if it is smaller), augmented once; the teacher's logits of
    each, computed once; and the first calibration_samples images of the calibration split."""
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor | None] = []
    logits: list[torch.Tensor] = []
    epoch = 0
    with evaluating(teacher):
        while len(xs) < cfg.steps:
            for x, y in data.loader("train", batch_size=cfg.batch_size, shuffle=True, seed=seed * 100_003 + epoch, drop_last=True):
                x = apply_augment(augment, x, gen)
                with autocast(precision):
                    logits.append(teacher(x).float())
                xs.append(x)
                ys.append(y if data.has_labels else None)
                if len(xs) == cfg.steps:
                    break
            epoch += 1
        cal_x, cal_y = data.batch("calibration", cfg.calibration_samples)
        cal_target = cal_y if data.has_labels else teacher(cal_x).argmax(1)
    return FewShotBatches(xs, ys, logits, cal_x, cal_target, data.has_labels, time.perf_counter() - started)


def short_kd(student: nn.Module, batches: FewShotBatches, cfg: FewShotConfig, precision: str, steps: int | None = None) -> dict[str, float]:
    """Train `student` in place on the first `steps` fixed batches (all of them by default); its calibration accuracy
    (the score) and SoTL-E."""
    started = time.perf_counter()
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    total = min(steps or len(batches.xs), len(batches.xs))
    warm = max(1, total // 10)
    late: list[float] = []
    student.train()
    for step, (x, y, t_logits) in enumerate(zip(batches.xs[:total], batches.ys[:total], batches.teacher_logits[:total])):
        for group in opt.param_groups:  # 10 % warm-up, then cosine to zero
            group["lr"] = cfg.lr * ((step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))
        with autocast(precision):
            s_logits = student(x).float()
        loss = cfg.alpha * losses.kd_loss(s_logits, t_logits, cfg.temperature)
        if y is not None:
            loss = loss + (1 - cfg.alpha) * F.cross_entropy(s_logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= total // 2:
            late.append(float(loss.detach()))
    with torch.no_grad(), evaluating(student):
        predictions = torch.cat([student(chunk).argmax(1) for chunk in batches.cal_x.split(500)])
    return {"accuracy": float((predictions == batches.cal_target).float().mean()), "sotl": sum(late) / max(1, len(late)),
            "seconds": time.perf_counter() - started}


AUTO_SHARE, AUTO_EPOCHS, AUTO_RANGE = 0.05, 15, (50, 200)


def auto_steps(train_samples: int, batch_size: int = 128) -> int:
    """The short run's length scaled with the data, as the built-in recipes' training is: 5 % of the steps of a
    15-epoch distillation (the full recipe's), within 50-200 (MNIST's 7.5k images: 50; CIFAR's 47.5k: 200)."""
    steps = round(AUTO_SHARE * AUTO_EPOCHS * max(1, train_samples // batch_size))
    return max(AUTO_RANGE[0], min(AUTO_RANGE[1], steps))


RANK_BY = ("accuracy", "sotl")  # calibration accuracy after the short run (higher first), or its SoTL-E (lower first)


def rerank(top: list[Any], space: Any, teacher: nn.Module, data: Any, shortlist: int, steps: int, seed: int, in_channels: int,
           num_classes: int, progress, rank_by: str = "accuracy") -> dict[str, Any]:
    """The few-shot tier: short-distil the first `shortlist` of `top` (zero-cost order, every one inside the budgets),
    then put them first in `top` by `rank_by` after the short run. Returns what the result records."""
    from squeeze.io.augment import resolve_augment
    from squeeze.passes.search.inputs import candidate_seed
    from squeeze.train.precision import resolve_precision

    started = time.perf_counter()
    cfg = FewShotConfig(steps=steps)
    precision = resolve_precision("auto", "cpu")
    shortlisted = top[:shortlist]
    progress(f"few-shot tier: {len(shortlisted)} candidates, {steps} distillation steps each (batch {cfg.batch_size})")
    batches = prepare_batches(teacher, data, cfg, resolve_augment("auto", data.name), precision, seed)
    for i, cand in enumerate(shortlisted):
        torch.manual_seed(candidate_seed(seed, cand.key))
        cand.metrics["fewshot"] = short_kd(space.build(cand.genome, in_channels, num_classes), batches, cfg, precision)
        progress(f"few-shot {i + 1}/{len(shortlisted)}: {cand.metrics['fewshot']['accuracy'] * 100:.1f} % after {steps} steps "
                 f"({cand.metrics['params']} params)")
    if rank_by == "sotl":
        ranked = sorted(shortlisted, key=lambda c: c.metrics["fewshot"]["sotl"])  # stable: ties keep the zero-cost order
        ranked_by = "mean training loss over the second half of the short distillation (SoTL-E, lower first)"
    else:
        ranked = sorted(shortlisted, key=lambda c: -c.metrics["fewshot"]["accuracy"])
        ranked_by = "calibration accuracy after the short distillation" if batches.labelled else "agreement with the teacher"
    top[:len(shortlisted)] = ranked
    return {"shortlist": len(shortlisted), "steps": steps, "batch_size": cfg.batch_size, "precision": precision, "ranked_by": ranked_by,
            "teacher_seconds": round(batches.teacher_seconds, 2), "seconds": round(time.perf_counter() - started, 2),
            "candidates": [{"key": c.key, "zero_cost_rank": shortlisted.index(c) + 1, **c.metrics["fewshot"]} for c in ranked]}
