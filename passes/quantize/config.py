"""The quantize pass's typed config, its input checks and the evaluations every part of the pass shares."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.errors import SqueezeError, UserInputError
from squeeze.measure.accuracy import accuracy, onnx_predictions, torch_predictions
from squeeze.measure.fidelity import OutputReference
from squeeze.measure.analysis import eval_mode
from squeeze.passes.quantize.backends import QuantBackend, backend_names, get_backend
from squeeze.targets.base import QuantRules

STATE_FILE = "qat_state.pt"
MODEL_FILE = "model.onnx"
FLOAT_FILE = "float.onnx"
OUTPUT_NAME = "logits"
Measure = Callable[[list[Path]], list[float]]  # ONNX files -> p50 ms each, measured interleaved


class SpeedGuardError(SqueezeError):
    """INT8 is slower than float on the target and the user did not allow that. Exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class QuantizeConfig:
    bits: int = 8
    epochs: int = 3  # QAT epochs after PTQ; 0 = PTQ only
    calib_samples: int = 512
    lr: float = 5e-4  # ~1/100 of the distill pass's 0.05 (methods.md §9: QAT LR ≈ 1/100 of training LR)
    weight_decay: float = 0.0
    batch_size: int = 128
    train_samples: int = 0  # QAT on a seeded subset of the train split of this size; 0 = all of it
    loss: str = "kd"  # the distill pass's loss terms (kd, dist, ce, fitnet, ...), see squeeze/train/objective.py
    temperature: float = 4.0
    alpha: float = 0.9
    scale_update_epochs: int = 0  # 0: activation scales frozen after PTQ (ModelOpt's QAD); k: re-estimated after each of the first k epochs
    backend: str = "auto"  # auto = the target's QuantRules.backend; or modelopt / torch-fx
    opset: int = 17
    parity_samples: int = 512
    parity_rel_tol: float = 0.05  # max |logit diff| allowed, as a fraction of the logits' range (see README: why)
    parity_min_top1: float = 0.99
    speed_guard: bool = True
    allow_slower: bool = False
    fallback_to_float: bool = False  # INT8 slower than float (after excluding layers): ship the float model instead of failing
    latency_rounds: int = 7  # interleaved float/INT8 rounds; the median of per-round p50s is compared
    latency_iterations: int = 40
    threads: int | None = None  # speed guard's threads; None: float and INT8 each at their fastest thread count
    float_input_max_channels: int = 4  # a conv reading the model input with at most this many channels runs in float (0: none)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bits not in (8, 4):
            raise UserInputError(f"--bits must be 8 or 4, got {self.bits}")
        if self.epochs < 0 or self.batch_size < 1 or self.calib_samples < 1 or self.train_samples < 0:
            raise UserInputError("--epochs must be >= 0, --batch-size and --calib-samples >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UserInputError("--lr must be > 0 and --weight-decay >= 0")
        if self.float_input_max_channels < 0:
            raise UserInputError(f"--float-input-max-channels must be >= 0 (0 quantizes every layer), got {self.float_input_max_channels}")
        if self.backend not in ("auto", *backend_names()):
            raise UserInputError(f"--backend must be auto, {', '.join(backend_names())}; got {self.backend!r}")
        if not 13 <= self.opset <= 20:
            raise UserInputError(f"--opset must be between 13 (per-channel Q/DQ) and 20 (the legacy exporter's maximum), got {self.opset}")
        if self.parity_rel_tol <= 0 or not 0 <= self.parity_min_top1 <= 1 or self.parity_samples < 1:
            raise UserInputError("parity needs samples >= 1, a tolerance > 0 and a top-1 agreement in [0, 1]")
        if self.scale_update_epochs < 0 or self.latency_rounds < 1 or self.latency_iterations < 2:
            raise UserInputError("--scale-update-epochs must be >= 0; latency rounds >= 1 and iterations >= 2")
        from squeeze.train.objective import parse_loss

        parse_loss(self.loss)

    def fingerprint(self) -> str:
        training = {k: v for k, v in asdict(self).items()
                    if k in ("bits", "epochs", "calib_samples", "lr", "weight_decay", "batch_size", "train_samples", "loss", "temperature", "alpha",
                             "scale_update_epochs", "backend", "float_input_max_channels", "seed")}
        return hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:16]


def resolve_backend(cfg: QuantizeConfig, rules: QuantRules, target_name: str) -> QuantBackend:
    """The backend for this target; a backend that cannot meet a rule of the target is an error naming it."""
    backend = get_backend(rules.backend if cfg.backend == "auto" else cfg.backend)
    unmet = backend.unmet_rule(rules)
    if unmet:
        raise UserInputError(f"backend {backend.name} cannot meet target {target_name}'s quantization rule {unmet}")
    if cfg.bits == 4:
        raise UserInputError("--bits 4 is not supported: ONNX Runtime's CPU EP and TensorRT's explicit INT8 path take no per-channel "
                             "INT4 Q/DQ for convolutions in this setup (README, quantize: 4-bit)")
    return backend


def check_inputs(model: ModelArtifact, teacher: ModelArtifact, data: DataBundle | None) -> None:
    if data is None:
        raise UserInputError("quantization needs calibration data: pass --data (the calibration split calibrates the INT8 scales)")
    if len(data.calibration) == 0:
        raise UserInputError(f"dataset {data.name} has no calibration samples (calibration split is empty); INT8 scales cannot be calibrated")
    if len(data.eval) == 0:
        raise UserInputError(f"dataset {data.name} has an empty eval split")
    if tuple(data.sample_shape) != tuple(model.input_spec.shape[1:]):
        raise UserInputError(f"dataset {data.name} samples have shape {list(data.sample_shape)}, the model takes {list(model.input_spec.shape[1:])}")
    example = model.input_spec.example(batch=2)
    with torch.no_grad():
        out_m, out_t = eval_mode(model.module)(example), eval_mode(teacher.module)(example)
    if not isinstance(out_m, torch.Tensor) or out_m.shape != out_t.shape:
        raise UserInputError(f"model output shape {list(getattr(out_m, 'shape', []))} does not match the teacher's {list(out_t.shape)}")


def calibration_batches(data: DataBundle, n: int, batch: int = 128) -> list[torch.Tensor]:
    x, _ = data.batch("calibration", n)
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def reference(teacher: nn.Module, loader, data: DataBundle, logits: bool) -> np.ndarray | OutputReference:
    """What evaluate() compares a model to on a split: the teacher's predicted classes, or (for maps and values)
    its outputs."""
    return torch_predictions(teacher, loader)[0] if logits else OutputReference(teacher, loader, data.targets)


def _fidelity(ev: dict[str, Any]) -> dict[str, Any]:
    """A map's pixel accuracy and agreement stand where a classifier's accuracy and agreement do."""
    return {"samples": ev["samples"], "accuracy": ev.get("pixel_accuracy"), "teacher_agreement": ev.get("pixel_agreement"),
            **{k: v for k, v in ev.items() if k not in ("samples", "pixel_accuracy", "pixel_agreement")}}


def evaluate(module: nn.Module, teacher_preds: np.ndarray | OutputReference, loader) -> dict[str, Any]:
    """Accuracy (if labelled) and top-1 agreement with the teacher's (cached) predictions on one split; for maps and
    values, the output NMSE to the teacher's outputs (and pixel accuracy / agreement for maps)."""
    if isinstance(teacher_preds, OutputReference):
        return _fidelity(teacher_preds.torch(module))
    p, y = torch_predictions(module, loader)
    return {"samples": int(len(y)), "accuracy": accuracy(p, y), "teacher_agreement": float((p == teacher_preds).mean())}


def _onnx_eval(path: Path, teacher_preds: np.ndarray | OutputReference, loader) -> dict[str, Any]:
    if isinstance(teacher_preds, OutputReference):
        return _fidelity(teacher_preds.onnx(path))
    p, y = onnx_predictions(path, loader)
    return {"samples": int(len(y)), "accuracy": accuracy(p, y), "teacher_agreement": float((p == teacher_preds).mean()),
            "runtime": "onnxruntime CPUExecutionProvider"}
