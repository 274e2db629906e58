"""The distillation objective every training pass uses (distill, prune recovery's logit terms, QAT):
loss terms parsed from text, weighted against labels or not, with the hint adapters they own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import UserInputError
from squeeze.measure.accuracy import accuracy, torch_predictions
from squeeze.measure.analysis import evaluating
from squeeze.train import losses
from squeeze.train.features import FeatureTap, classifier_name, has_layers, stage_names

LOGIT_TERMS = ("kd", "dist")
OUTPUT_TERMS = ("output",)  # normalised MSE to the teacher's outputs: the one term for outputs that are not class logits
FEATURE_TERMS = ("fitnet",)
RELATION_TERMS = ("rkd", "sp")
ALL_TERMS = ("ce", *LOGIT_TERMS, *OUTPUT_TERMS, *FEATURE_TERMS, *RELATION_TERMS)
DEFAULT_WEIGHTS = {"fitnet": 1.0, "rkd": 1.0, "sp": 3000.0}  # SP's γ from its paper; RKD weights are inside the term


@dataclass(frozen=True)
class ObjectiveConfig:
    loss: str = "kd"  # '+'-joined terms, each optionally 'name=weight': e.g. "kd+dist", "kd=0.9+ce=0.1+fitnet"
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the logit terms; CE on labels gets 1 - alpha unless given
    label_free: bool = False
    feature_pairs: tuple[tuple[str, str], ...] = ()  # (student layer, teacher layer); empty = stage outputs, matched from the end


def parse_loss(text: str) -> dict[str, float | None]:
    """'kd+dist' -> {'kd': None, 'dist': None}; 'kd=0.9+ce=0.1' -> explicit weights."""
    terms: dict[str, float | None] = {}
    for part in text.replace(",", "+").split("+"):
        name, _, weight = part.strip().partition("=")
        if name not in ALL_TERMS:
            raise UserInputError(f"unknown loss {name!r}; choose from {', '.join(ALL_TERMS)} joined with '+'")
        try:
            terms[name] = float(weight) if weight else None
        except ValueError:
            raise UserInputError(f"loss weight for {name!r} must be a number, got {weight!r}") from None
    return terms  # 'ce' alone is plain supervised training: the baseline distillation must beat


def resolve_weights(cfg: ObjectiveConfig, has_labels: bool, logits: bool = True) -> dict[str, float]:
    """Each term's weight. For outputs that are not class logits (`logits` False) the logit terms become output
    matching, and `has_labels` says whether CE applies (per-pixel class labels for a class map)."""
    terms = parse_loss(cfg.loss)
    if not logits:  # KD and DIST compare class distributions; for maps and values their place is taken by output matching
        terms = {("output" if n in LOGIT_TERMS else n): w for n, w in terms.items()}
    use_labels = has_labels and not cfg.label_free
    if "ce" in terms and not use_labels:
        raise UserInputError("loss 'ce' needs labels; this run is label-free" if cfg.label_free else "loss 'ce' needs a labelled dataset")
    weights: dict[str, float] = {}
    logit_weight = cfg.alpha if use_labels else 1.0
    for name, weight in terms.items():
        if weight is not None:
            weights[name] = weight
        elif name in (*LOGIT_TERMS, *OUTPUT_TERMS):
            weights[name] = logit_weight
        elif name == "ce":
            weights[name] = 1.0 - cfg.alpha if len(terms) > 1 else 1.0  # alone: plain supervised training
        else:
            weights[name] = DEFAULT_WEIGHTS[name]
    if use_labels and "ce" not in terms and any(n in (*LOGIT_TERMS, *OUTPUT_TERMS) for n in terms):
        weights["ce"] = 1.0 - cfg.alpha  # Hinton's form: (1 - α)·CE + α·KD
    return {k: v for k, v in weights.items() if v > 0}


def evaluate(student: nn.Module, teacher: nn.Module, loader, device: str) -> dict[str, Any]:
    """Student accuracy (where labelled), teacher accuracy and their top-1 agreement on one split."""
    s_pred, labels = torch_predictions(student, loader, device)
    t_pred, _ = torch_predictions(teacher, loader, device)
    return {
        "samples": int(len(labels)),
        "student_accuracy": accuracy(s_pred, labels),
        "teacher_accuracy": accuracy(t_pred, labels),
        "agreement": float((s_pred == t_pred).mean()) if len(labels) else None,
    }


class DistillObjective(nn.Module):
    """The weighted sum of loss terms; owns the hint adapters (trained with the student)."""

    def __init__(self, weights: dict[str, float], cfg: ObjectiveConfig, teacher: nn.Module, student: nn.Module, example: torch.Tensor):
        super().__init__()
        self.weights = weights
        self.temperature = cfg.temperature
        self.needs_teacher = any(k != "ce" for k in weights)
        self.teacher_tap = self.student_tap = None
        needs_features = "fitnet" in weights
        needs_embedding = any(n in weights for n in RELATION_TERMS)
        if needs_features or needs_embedding:
            if not has_layers(teacher):
                raise UserInputError("feature and relation losses need the teacher's layers: use a .pt2, a squeeze checkpoint or a "
                                     "state_dict + --arch, not TorchScript (hooks on its submodules never fire)")
            pairs = list(cfg.feature_pairs)
            if needs_features and not pairs:
                s_stages, t_stages = stage_names(student, example), stage_names(teacher, example)
                k = min(len(s_stages), len(t_stages))
                if k == 0:
                    raise UserInputError("no 4-D stage outputs found for feature hints; name layers with feature_pairs")
                pairs = list(zip(s_stages[-k:], t_stages[-k:]))
            self.pairs = pairs
            s_embed = classifier_name(student) if needs_embedding else None
            t_embed = classifier_name(teacher) if needs_embedding else None
            if needs_embedding and (s_embed is None or t_embed is None):
                raise UserInputError("relation losses (rkd, sp) need a final nn.Linear in teacher and student")
            self.student_tap = FeatureTap(student, [s for s, _ in pairs], s_embed)
            self.teacher_tap = FeatureTap(teacher, [t for _, t in pairs], t_embed)
        self.hints = None
        if needs_features:
            with torch.no_grad(), evaluating(student), evaluating(teacher):
                student(example)
                teacher(example)
            channels = [(s.shape[1], t.shape[1]) for s, t in zip(self.student_tap.features(), self.teacher_tap.features())]
            self.hints = losses.HintAdapters(channels)

    def forward(self, s_logits: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        w = self.weights
        if "ce" in w:
            parts["ce"] = F.cross_entropy(s_logits, y)
        if "kd" in w:
            parts["kd"] = losses.kd_loss(s_logits, t_logits, self.temperature)
        if "dist" in w:
            parts["dist"] = losses.dist_loss(s_logits, t_logits)
        if "output" in w:
            parts["output"] = losses.nmse(s_logits, t_logits)
        if "fitnet" in w:
            parts["fitnet"] = self.hints(self.student_tap.features(), self.teacher_tap.features())
        if "rkd" in w:
            parts["rkd"] = losses.rkd_loss(self.student_tap.embedding, self.teacher_tap.embedding)
        if "sp" in w:
            parts["sp"] = losses.sp_loss(self.student_tap.embedding, self.teacher_tap.embedding)
        total = sum(w[k] * v for k, v in parts.items())
        # detached tensors, not floats: float() inside a torch.compile'd step is a graph break (and a console warning)
        return total, {k: v.detach() for k, v in parts.items()}

    def close(self) -> None:
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.close()


class Trainable(nn.Module):
    """Student + loss (with its adapters) as one module, so DistributedDataParallel syncs all their gradients."""

    def __init__(self, student: nn.Module, objective: DistillObjective):
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, x: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.objective(self.student(x).float(), t_logits, y)


def check_student_fits(teacher: Any, student: nn.Module, data: Any) -> int:
    """The student runs on the teacher's input and gives its output shape; labels fit its classes. Returns the class count."""
    if len(data.train) == 0 or len(data.calibration) == 0 or len(data.eval) == 0:
        raise UserInputError(f"dataset {data.name} has an empty split (train {len(data.train)}, calibration {len(data.calibration)}, eval {len(data.eval)})")
    if tuple(data.sample_shape) != tuple(teacher.input_spec.shape[1:]):
        raise UserInputError(f"dataset {data.name} samples have shape {list(data.sample_shape)}, the teacher takes {list(teacher.input_spec.shape[1:])}")
    example = teacher.input_spec.example(batch=2)
    with torch.no_grad(), evaluating(student), evaluating(teacher.module):
        t_out = teacher.module(example)
        try:
            s_out = student(example)
        except Exception as exc:
            raise UserInputError(f"student fails on the teacher's input {list(example.shape)}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(s_out, torch.Tensor) or s_out.shape != t_out.shape:
        raise UserInputError(f"student output shape {list(getattr(s_out, 'shape', []))} does not match the teacher's {list(t_out.shape)}")
    num_classes = t_out.shape[1]
    tensors = getattr(data.full, "tensors", None)  # in-memory data: check every label before training (others: per batch)
    if data.has_labels and tensors is not None and len(tensors) > 1:
        labels = tensors[1]
        if labels.min() < 0 or labels.max() >= num_classes:
            raise UserInputError(f"labels must be in [0, {num_classes}) for a {num_classes}-class teacher; found {int(labels.min())}..{int(labels.max())}")
    return num_classes
