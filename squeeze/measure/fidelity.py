"""Output fidelity, for models whose output is not class logits (dense maps, regression values): how close
a model's outputs are to the teacher's on a data split, in torch or in ONNX Runtime alike.

- output_nmse: sum of squared differences to the teacher's output over the split / sum of its squares
  (the mean squared error in units of the teacher output's mean square: 0 is the teacher itself, 1 is
  as far off as outputting zeros);
- pixel_agreement: for (C, H, W) maps with C >= 2, the share of pixels whose argmax over C is the teacher's;
- pixel_accuracy: with per-pixel labels, the share of pixels whose argmax is the label;
- target_mae: with regression targets, the mean absolute difference to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeeze.measure.analysis import evaluating

MAX_CACHED_VALUES = 32_000_000  # the teacher's outputs are kept (128 MB of float32) up to this, else recomputed per batch


class OutputReference:
    """The teacher's outputs on one split, to score other models' outputs against (batch by batch)."""

    def __init__(self, teacher: torch.nn.Module, loader: Any, targets: str | None = None, device: str = "cpu"):
        self.teacher, self.loader, self.targets, self.device = teacher, loader, targets, device
        self._cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = []
        values = 0
        for x, y, t in self._fresh():
            values += t.numel() + x.numel()
            if values > MAX_CACHED_VALUES:
                self._cache = None
                break
            self._cache.append((x, y, t))
        self.teacher_scores = self.score(None, teacher=True)

    @torch.no_grad()
    def _teacher_out(self, x: torch.Tensor) -> torch.Tensor:
        with evaluating(self.teacher):
            return self.teacher(x.to(self.device)).float().cpu()

    def _fresh(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x, y, self._teacher_out(x)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return iter(self._cache) if self._cache is not None else self._fresh()

    def score(self, run: Callable[[torch.Tensor], Any] | None, teacher: bool = False) -> dict[str, Any]:
        """The fidelity figures of `run(x)` (a batch of outputs) against the teacher's (`teacher`: the teacher's own)."""
        sums = {"err": 0.0, "ref": 0.0, "agree": 0, "correct": 0, "pixels": 0, "abs": 0.0, "values": 0}
        samples = 0
        for x, y, t in self.batches():
            s = t if teacher or run is None else torch.as_tensor(np.asarray(run(x))).float()
            samples += len(x)
            sums["err"] += float((s - t).double().pow(2).sum())
            sums["ref"] += float(t.double().pow(2).sum())
            if s.ndim == 4 and s.shape[1] >= 2:
                pred = s.argmax(1)
                sums["agree"] += int((pred == t.argmax(1)).sum())
                sums["pixels"] += pred.numel()
                if self.targets == "pixel":
                    sums["correct"] += int((pred == y).sum())
            if self.targets == "regression":
                sums["abs"] += float((s - y).abs().sum())
                sums["values"] += y.numel()
        out: dict[str, Any] = {"samples": samples, "output_nmse": sums["err"] / max(sums["ref"], 1e-30)}
        if sums["pixels"]:
            out["pixel_agreement"] = sums["agree"] / sums["pixels"]
            if self.targets == "pixel":
                out["pixel_accuracy"] = sums["correct"] / sums["pixels"]
        if sums["values"]:
            out["target_mae"] = sums["abs"] / sums["values"]
        return out

    @torch.no_grad()
    def torch(self, module: torch.nn.Module, device: str | None = None) -> dict[str, Any]:
        with evaluating(module):
            return self.score(lambda x: module(x.to(device or self.device)).float().cpu())

    def onnx(self, path: Path) -> dict[str, Any]:
        from squeeze.targets.ort_runtime import create_session

        session, _ = create_session(str(path), ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return {**self.score(lambda x: session.run(None, {name: x.numpy()})[0]), "runtime": "onnxruntime CPUExecutionProvider"}


def agreement(got: np.ndarray, reference: np.ndarray, logits: bool) -> float | None:
    """Top-1 agreement of class logits; pixel agreement (argmax over channels) of (N, C, H, W) maps with C >= 2;
    None for other outputs (regression values have no class to agree on: their parity is the tolerance alone)."""
    if logits:
        return float((got.argmax(-1) == reference.argmax(-1)).mean())
    if reference.ndim == 4 and reference.shape[1] >= 2:
        return float((got.argmax(1) == reference.argmax(1)).mean())
    return None


def summary(reference: OutputReference, final: dict[str, Any], split: str) -> dict[str, Any]:
    """The deployed model's fidelity next to the teacher's own figures on the split (for the manifest)."""
    teacher = reference.teacher_scores
    out = {"split": split, **final}
    for key in ("pixel_accuracy", "target_mae"):
        if key in teacher:
            out[f"teacher_{key}"] = teacher[key]
    return out
