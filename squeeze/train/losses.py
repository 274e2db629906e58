"""Distillation losses (formulas: shared/reference/methods.md §7.1).

Logit losses take student and teacher logits [B, C]; the output-matching loss (nmse) takes outputs of
any shape; relation losses take embeddings [B, D] (any D: teacher and student widths may differ); hint
losses take feature maps through adapters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)), batch-mean. T² keeps gradients comparable across T."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean") * (t * t)


def nmse(student: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """||s - t||² / ||t||² per sample, averaged: scale-free, so blocks, maps and boxes weigh alike. As the
    output-matching loss it needs no labels and no classes: any output the teacher gives is a target."""
    s, t = student.flatten(1), target.flatten(1).detach()
    return ((s - t).pow(2).sum(1) / (t.pow(2).sum(1) + eps)).mean()


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """DIST (Huang et al. 2022): 1 − Pearson correlation of class probabilities, per sample (inter)
    and per class across the batch (intra), scaled by τ²."""
    t = temperature
    ys, yt = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
    inter = 1.0 - _pearson_rows(ys, yt).mean()
    intra = 1.0 - _pearson_rows(ys.t(), yt.t()).mean()
    return (t * t) * (beta * inter + gamma * intra)


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    d = d.clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> torch.Tensor:
    """RKD (Park et al. 2019) on embeddings: smooth-L1 between mean-normalised pairwise distances,
    and between cosines of the angles each triplet forms."""
    s, t = student.flatten(1), teacher.flatten(1).detach()
    with torch.no_grad():
        td = _pairwise_distances(t)
        td = td / td[td > 0].mean()
    sd = _pairwise_distances(s)
    sd = sd / sd[sd > 0].mean()
    distance = F.smooth_l1_loss(sd, td)
    with torch.no_grad():
        tv = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
        t_angle = torch.bmm(tv, tv.transpose(1, 2)).flatten()
    sv = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    s_angle = torch.bmm(sv, sv.transpose(1, 2)).flatten()
    angle = F.smooth_l1_loss(s_angle, t_angle)
    return distance_weight * distance + angle_weight * angle


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): match row-normalised batch Gram matrices, ‖·‖_F² / B².
    Width-agnostic: the Grams are B×B whatever the channel counts."""
    s, t = student.flatten(1), teacher.flatten(1).detach()
    gs = F.normalize(s @ s.t(), p=2, dim=1)
    gt = F.normalize(t @ t.t(), p=2, dim=1)
    return (gs - gt).pow(2).sum() / (len(s) ** 2)


class HintAdapters(nn.Module):
    """FitNet hints: a learned 1×1 conv (+BN) per layer pair maps student channels to the teacher's;
    MSE against the teacher feature, resized to the teacher's spatial size when they differ."""

    def __init__(self, pairs: list[tuple[int, int]]):
        super().__init__()
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct)) for cs, ct in pairs
        )

    def forward(self, student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        total = student_feats[0].new_zeros(())
        for adapter, s, t in zip(self.adapters, student_feats, teacher_feats):
            s = adapter(s)
            if s.shape[-2:] != t.shape[-2:]:
                s = F.adaptive_avg_pool2d(s, t.shape[-2:])
            total = total + F.mse_loss(s, t.detach())
        return total / max(1, len(self.adapters))
