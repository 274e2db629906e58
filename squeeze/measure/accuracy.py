"""Accuracy of torch and ONNX models on a data split, and their top-1 agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from squeeze.measure.analysis import evaluating
from squeeze.io.data import UNLABELLED


@torch.no_grad()
def torch_predictions(module: torch.nn.Module, loader: DataLoader, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    preds, labels = [], []
    with evaluating(module):
        for x, y in loader:
            preds.append(module(x.to(device)).argmax(-1).cpu().numpy())
            labels.append(np.asarray(y))
    return np.concatenate(preds), np.concatenate(labels)


def onnx_predictions(path: Path, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    from squeeze.targets.ort_runtime import create_session

    session, _ = create_session(str(path), ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    preds, labels = [], []
    for x, y in loader:
        preds.append(session.run(None, {name: x.numpy()})[0].argmax(-1))
        labels.append(np.asarray(y))
    return np.concatenate(preds), np.concatenate(labels)


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float | None:
    labelled = labels != UNLABELLED
    return float((preds[labelled] == labels[labelled]).mean()) if labelled.any() else None


def compare(teacher: tuple[np.ndarray, np.ndarray], student: tuple[np.ndarray, np.ndarray], split: str) -> dict[str, Any]:
    return {
        "split": split,
        "samples": int(len(teacher[0])),
        "teacher_accuracy": accuracy(*teacher),
        "output_accuracy": accuracy(*student),
        "top1_agreement": float((teacher[0] == student[0]).mean()),
    }
