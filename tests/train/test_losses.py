"""Distillation losses: the properties their formulas promise (methods.md §7.1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from squeeze.train import losses

G = torch.Generator().manual_seed(0)
S = torch.randn(16, 10, generator=G)
T = torch.randn(16, 10, generator=G) * 3


def test_kd_matches_formula_and_vanishes_on_equal_logits():
    t = 4.0
    manual = (F.softmax(T / t, 1) * (F.log_softmax(T / t, 1) - F.log_softmax(S / t, 1))).sum(1).mean() * t * t
    assert losses.kd_loss(S, T, t) == pytest.approx(float(manual), rel=1e-5)
    assert float(losses.kd_loss(T, T, t)) == pytest.approx(0.0, abs=1e-6)


def test_kd_temperature_squared_keeps_gradient_scale():
    """Without T², the soft-target gradient shrinks ~1/T²; with it, the scale stays within a small factor."""
    norms = []
    for t in (2.0, 8.0):
        s = S.clone().requires_grad_(True)
        losses.kd_loss(s, T, t).backward()
        norms.append(float(s.grad.norm()))
    assert 0.25 < norms[1] / norms[0] < 4  # 1/T² alone would give 1/16


def test_dist_zero_for_equal_and_positive_otherwise():
    assert float(losses.dist_loss(T, T)) == pytest.approx(0.0, abs=1e-5)
    assert float(losses.dist_loss(S, T)) > 0.1
    # A slightly sharpened copy of the teacher still correlates almost perfectly.
    assert float(losses.dist_loss(T * 1.01, T)) < 0.01


def test_rkd_scale_invariant_and_zero_on_same_geometry():
    emb_t = torch.randn(12, 32, generator=G)
    assert float(losses.rkd_loss(emb_t, emb_t)) == pytest.approx(0.0, abs=1e-5)
    assert float(losses.rkd_loss(emb_t * 5.0, emb_t)) == pytest.approx(0.0, abs=1e-4)  # distances normalised by their mean
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=G))
    assert float(losses.rkd_loss(emb_t @ q, emb_t)) == pytest.approx(0.0, abs=1e-4)  # rotations keep distances and angles
    assert float(losses.rkd_loss(torch.randn(12, 8, generator=G), emb_t)) > 0.5  # works across widths


def test_sp_width_agnostic():
    emb_t = torch.randn(12, 64, generator=G)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=G))
    assert float(losses.sp_loss(emb_t @ q, emb_t)) == pytest.approx(0.0, abs=1e-6)  # same Gram matrix
    assert float(losses.sp_loss(torch.randn(12, 16, generator=G), emb_t)) > 1e-4  # 16-wide student vs 64-wide teacher


def test_hint_adapters_map_channels_and_learn():
    hints = losses.HintAdapters([(4, 8)])
    s = torch.randn(2, 4, 14, 14, requires_grad=True)
    t = torch.randn(2, 8, 7, 7)
    loss = hints([s], [t])
    loss.backward()
    assert math.isfinite(loss.item()) and s.grad is not None and hints.adapters[0][0].weight.grad is not None


def test_output_matching_is_scale_free_and_zero_on_the_teacher():
    """The normalised MSE of any output (maps here): ||s - t||² / ||t||² per sample, the same at any scale."""
    t = torch.randn(4, 2, 6, 6, generator=G)
    s = t + 0.1 * torch.randn(4, 2, 6, 6, generator=G)
    manual = ((s - t).pow(2).flatten(1).sum(1) / t.pow(2).flatten(1).sum(1)).mean()
    assert float(losses.nmse(s, t)) == pytest.approx(float(manual), rel=1e-5)
    assert float(losses.nmse(100 * s, 100 * t)) == pytest.approx(float(manual), rel=1e-4)
    assert float(losses.nmse(t, t)) == 0.0


def test_logit_terms_become_output_matching_for_outputs_that_are_not_logits():
    from squeeze.train.objective import ObjectiveConfig, resolve_weights

    cfg = ObjectiveConfig(loss="kd", alpha=0.9)
    assert resolve_weights(cfg, has_labels=True) == pytest.approx({"kd": 0.9, "ce": 0.1})
    assert resolve_weights(cfg, has_labels=False, logits=False) == {"output": 1.0}  # a box regressor: no labels to use
    assert resolve_weights(cfg, has_labels=True, logits=False) == pytest.approx({"output": 0.9, "ce": 0.1})  # per-pixel labels
    assert resolve_weights(ObjectiveConfig(loss="kd+fitnet"), has_labels=False, logits=False) == {"output": 1.0, "fitnet": 1.0}
