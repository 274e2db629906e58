"""Size-independent zero-cost proxies from the literature, and their log-rank aggregation (issue 19).

- ZiCo (Li et al., ICLR 2023): sum over conv/linear layers of log(sum_theta E|g| / std(g)), the gradient's
  inverse coefficient of variation across mini-batches (the proxy batch split in two, as the paper's code does).
- MeCo (Jiang et al., NeurIPS 2023): sum over layers with a 4-D output of the minimum eigenvalue of the
  Pearson correlation matrix between the channels of one image's feature map (channels x positions).
- Log-rank aggregation (AZ-NAS, Lee & Ham, CVPR 2024): a candidate's score is sum_i log(rank_i / n) over the
  proxies, ranks ascending within the set being compared, so no single proxy's scale dominates and a
  candidate poor on any one proxy is pushed down.

Higher is better for each, as for every proxy in proxies.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad]


def zico(student: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: int = 2) -> float:
    layers = _layers(student)
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    student.train()
    for chunk_x, chunk_y in zip(x.chunk(splits), y.chunk(splits)):
        loss = F.cross_entropy(student(chunk_x), chunk_y)
        for i, g in enumerate(torch.autograd.grad(loss, [m.weight for m in layers])):
            grads[i].append(g.detach().flatten())
    total = 0.0
    for per_batch in grads:
        stacked = torch.stack(per_batch).double()
        std = stacked.std(0, unbiased=False)
        nonzero = std > 0
        ratio = float((stacked.abs().mean(0)[nonzero] / std[nonzero]).sum())
        if ratio > 0:
            total += math.log(ratio)
    return total


def meco(student: nn.Module, x: torch.Tensor) -> float:
    values: list[float] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] > 1 and out.shape[2] * out.shape[3] > 1:
            corr = torch.corrcoef(out[0].detach().flatten(1).double())
            corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
            values.append(float(torch.linalg.eigvalsh(corr).min()))

    hooks = [m.register_forward_hook(hook) for m in student.modules() if not list(m.children())]
    student.eval()
    try:
        with torch.no_grad():
            student(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return float(sum(values))


def log_rank_aggregate(columns: Sequence[Sequence[float]]) -> list[float]:
    """AZ-NAS's non-linear ranking aggregation: for n candidates and each proxy column, rank ascending (1 = worst,
    ties share their mean rank), then each candidate's sum of log(rank / n)."""
    if not columns:
        return []
    n = len(columns[0])
    totals = [0.0] * n
    for column in columns:
        order = sorted(range(n), key=lambda i: column[i])
        ranks = [0.0] * n
        i = 0
        while i < n:
            j = i
            while j + 1 < n and column[order[j + 1]] == column[order[i]]:
                j += 1
            for k in range(i, j + 1):
                ranks[order[k]] = (i + j) / 2 + 1
            i = j + 1
        for k in range(n):
            totals[k] += math.log(ranks[k] / n)
    return totals
