"""Quantize pass: INT8 quantization-aware distillation (QAD) with the teacher, QDQ export checked
against the target's rules, parity torch(fake-quant) vs ONNX Runtime, and a speed guard.

Order of work (methods.md §4, §9): fold BatchNorm into the convolutions; insert quantizers and
calibrate them on the calibration split (PTQ); train with the distillation losses of the distill
pass against the teacher at a low LR (QAT), activation scales frozen after `scale_update_epochs`
(re-estimated on the calibration split after each earlier epoch); pick the best epoch (PTQ counts
as epoch 0) on the calibration split, report on the eval split. State is saved after each epoch
and a re-run with the same config resumes. Then export QDQ ONNX (legacy exporter, opset >= 13),
check the graph against the target's QuantRules, check parity, and measure float vs INT8 on the
target: an INT8 model slower than the float one is not shipped without allow_slower.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from squeeze.measure.analysis import count_macs, count_params
from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.io.data import DataBundle
from squeeze.errors import ParityError, SqueezeError, UserInputError
from squeeze.measure.accuracy import accuracy, onnx_predictions, torch_predictions
from squeeze.io.fsutil import atomic_path, load_resume_state, sha256_file, write_json_atomic
from squeeze.passes.base import Context, PassBase, Requires
from squeeze.passes.quantize.backends import BACKENDS, QuantBackend, fold_batchnorm, get_backend
from squeeze.passes.quantize.qdq import enforce_rules, fold_weight_quantizers, qdq_summary
from squeeze.targets.base import QuantRules, Target

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
    loss: str = "kd"  # the distill pass's loss terms (kd, dist, ce, fitnet, ...), see passes/distill.py
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
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bits not in (8, 4):
            raise UserInputError(f"--bits must be 8 or 4, got {self.bits}")
        if self.epochs < 0 or self.batch_size < 1 or self.calib_samples < 1 or self.train_samples < 0:
            raise UserInputError("--epochs must be >= 0, --batch-size and --calib-samples >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UserInputError("--lr must be > 0 and --weight-decay >= 0")
        if self.backend not in ("auto", *BACKENDS):
            raise UserInputError(f"--backend must be auto, {', '.join(BACKENDS)}; got {self.backend!r}")
        if not 13 <= self.opset <= 20:
            raise UserInputError(f"--opset must be between 13 (per-channel Q/DQ) and 20 (the legacy exporter's maximum), got {self.opset}")
        if self.parity_rel_tol <= 0 or not 0 <= self.parity_min_top1 <= 1 or self.parity_samples < 1:
            raise UserInputError("parity needs samples >= 1, a tolerance > 0 and a top-1 agreement in [0, 1]")
        if self.scale_update_epochs < 0 or self.latency_rounds < 1 or self.latency_iterations < 2:
            raise UserInputError("--scale-update-epochs must be >= 0; latency rounds >= 1 and iterations >= 2")
        from squeeze.passes.distill.pass_ import parse_loss

        parse_loss(self.loss)

    def fingerprint(self) -> str:
        training = {k: v for k, v in asdict(self).items()
                    if k in ("bits", "epochs", "calib_samples", "lr", "weight_decay", "batch_size", "train_samples", "loss", "temperature", "alpha",
                             "scale_update_epochs", "backend", "seed")}
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
        out_m, out_t = model.module.eval()(example), teacher.module.eval()(example)
    if not isinstance(out_m, torch.Tensor) or out_m.shape != out_t.shape:
        raise UserInputError(f"model output shape {list(getattr(out_m, 'shape', []))} does not match the teacher's {list(out_t.shape)}")


def calibration_batches(data: DataBundle, n: int, batch: int = 128) -> list[torch.Tensor]:
    x, _ = data.batch("calibration", n)
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def evaluate(module: nn.Module, teacher_preds: np.ndarray, loader) -> dict[str, Any]:
    """Accuracy (if labelled) and top-1 agreement with the teacher's (cached) predictions on one split."""
    p, y = torch_predictions(module, loader)
    return {"samples": int(len(y)), "accuracy": accuracy(p, y), "teacher_agreement": float((p == teacher_preds).mean())}


def _onnx_eval(path: Path, teacher_preds: np.ndarray, loader) -> dict[str, Any]:
    p, y = onnx_predictions(path, loader)
    return {"samples": int(len(y)), "accuracy": accuracy(p, y), "teacher_agreement": float((p == teacher_preds).mean()),
            "runtime": "onnxruntime CPUExecutionProvider"}


# ----------------------------------------------------------------------------------------------
# QAT with the teacher


def _score(ev: dict[str, Any]) -> float:
    return ev["accuracy"] if ev["accuracy"] is not None else ev["teacher_agreement"]


def qat(qmodel: nn.Module, backend: QuantBackend, teacher: nn.Module, data: DataBundle, cfg: QuantizeConfig,
        calibration: list[torch.Tensor], work_dir: Path, example: torch.Tensor, progress=lambda m: None) -> dict[str, Any]:
    """Train the fake-quant model against the teacher; returns history and the best epoch (0 = PTQ).

    Resumable: after every epoch the state goes to work_dir/qat_state.pt atomically; a re-run with
    the same config and data picks up there. Each epoch reseeds from (seed, epoch)."""
    from squeeze.passes.distill.pass_ import DistillConfig, _Objective, resolve_weights

    dcfg = DistillConfig(epochs=max(1, cfg.epochs), loss=cfg.loss, temperature=cfg.temperature, alpha=cfg.alpha, seed=cfg.seed)
    weights = resolve_weights(dcfg, data.has_labels)
    for p in teacher.parameters():
        p.requires_grad_(False)
    objective = _Objective(weights, dcfg, teacher, qmodel, example)
    params = [p for p in [*qmodel.parameters(), *objective.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    train_set = data.train
    if cfg.train_samples and cfg.train_samples < len(train_set):  # a fixed, seeded subset: INT8 QAD needs few steps
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        train_set = torch.utils.data.Subset(train_set, order[: cfg.train_samples])
    drop_last = len(train_set) > cfg.batch_size

    def train_loader(epoch: int):
        return torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                                           generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))

    steps = max(1, len(train_loader(0)))
    total = max(1, cfg.epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    cal_loader = data.loader("calibration", batch_size=512)
    cal_teacher = torch_predictions(teacher, cal_loader)[0]
    fingerprint = cfg.fingerprint() + data.fingerprint
    state_path = work_dir / STATE_FILE
    ptq_cal = evaluate(qmodel, cal_teacher, cal_loader)
    history: list[dict[str, Any]] = [{"epoch": 0, "phase": "ptq", "calibration": ptq_cal}]
    best = {"score": _score(ptq_cal), "epoch": 0, "state": copy.deepcopy(qmodel.state_dict())}
    start = 0
    state = load_resume_state(state_path, progress)
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise UserInputError(f"{work_dir} holds a quantization run with a different config or data; delete it or change --out")
        qmodel.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start = state["history"], state["best"], int(state["epoch"])
        progress(f"resuming QAT from epoch {start} of {cfg.epochs} ({state_path})")
    started = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        qmodel.train()
        teacher.eval()
        sums: dict[str, float] = {}
        seen = 0
        for x, y in train_loader(epoch):
            with torch.no_grad():
                t_logits = teacher(x) if objective.needs_teacher else None
            loss, parts = objective(qmodel(x).float(), t_logits, y)
            if not torch.isfinite(loss):
                raise SqueezeError(f"QAT diverged (non-finite loss) in epoch {epoch + 1}; lower --lr (now {cfg.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(x)
            seen += len(x)
        backend.refresh_weight_scales(qmodel)
        if epoch < cfg.scale_update_epochs:
            backend.recalibrate(qmodel, calibration)
        cal = evaluate(qmodel, cal_teacher, cal_loader)
        record = {"epoch": epoch + 1, "phase": "qat", **{k: v / max(1, seen) for k, v in sums.items()},
                  "scales": "re-estimated" if epoch < cfg.scale_update_epochs else "frozen",
                  "calibration": cal, "seconds": round(time.perf_counter() - started, 1)}
        history.append(record)
        if _score(cal) > best["score"]:
            best = {"score": _score(cal), "epoch": epoch + 1, "state": copy.deepcopy(qmodel.state_dict())}
        state = {"fingerprint": fingerprint, "epoch": epoch + 1, "model": qmodel.state_dict(), "objective": objective.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history, "best": best}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        acc = cal["accuracy"]
        progress(f"QAT epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, calibration "
                 + (f"acc {acc * 100:.2f}%, " if acc is not None else "") + f"agreement {cal['teacher_agreement'] * 100:.2f}%")
    objective.close()
    qmodel.load_state_dict(best["state"])
    qmodel.eval()
    return {"history": history, "best_epoch": best["epoch"], "loss_weights": weights}


# ----------------------------------------------------------------------------------------------
# Export, parity, latency


def export_qdq(module: nn.Module, spec: InputSpec, path: Path, cfg: QuantizeConfig, rules: QuantRules | None, target: str) -> dict[str, Any]:
    """Legacy-export `module` (fake-quant or float) to `path` atomically; QDQ graphs are tidied and checked."""
    import onnx

    from squeeze.passes.export import _quiet_exporter

    module = module.eval()
    axes = {spec.name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if spec.dynamic_batch else None
    with atomic_path(path) as tmp:
        try:
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(module, (spec.example(),), str(tmp), dynamo=False, opset_version=cfg.opset, input_names=[spec.name],
                                  output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
        except Exception as exc:
            raise UserInputError(f"QDQ ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:240]}") from None
        model = onnx.load(str(tmp))
        if rules is not None:
            model = fold_weight_quantizers(model, rules.weight_max_int)
            onnx.checker.check_model(model)
            enforce_rules(model, rules, target)
            onnx.save(model, str(tmp))
        summary = qdq_summary(model)
    return summary


@torch.no_grad()
def check_parity(module: nn.Module, path: Path, x: torch.Tensor, cfg: QuantizeConfig) -> dict[str, Any]:
    """ORT logits vs the fake-quant torch model's on the same real samples.

    INT8 kernels and fake-quant round the same values but accumulate in different orders (int32 vs
    float), so a value sitting on a rounding boundary can land one quantization step apart and the
    step propagates: the tolerance is a fraction of the logits' range, plus top-1 agreement."""
    from squeeze.targets.ort_runtime import create_session

    reference = module.eval()(x).float().numpy()
    session, _ = create_session(str(path), ["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = np.abs(got - reference)
    spread = float(reference.max() - reference.min())
    limit = cfg.parity_rel_tol * spread
    top1 = float((got.argmax(-1) == reference.argmax(-1)).mean())
    return {"samples": int(len(x)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "logit_range": spread, "tolerance_max_abs": limit, "top1_agreement": top1, "min_top1_agreement": cfg.parity_min_top1,
            "passed": bool(diff.max() <= limit and top1 >= cfg.parity_min_top1)}


def target_measure(target: Target, spec: InputSpec, cfg: QuantizeConfig) -> Measure:
    """p50 latency of each file on the target from one interleaved comparison (squeeze/measure/latency.py):
    rounds of one block per file, more rounds while the ratio to the first file is loose."""
    from squeeze.measure.latency import MeasureConfig, compare

    settings = MeasureConfig(block_iterations=cfg.latency_iterations, warmup=5, min_rounds=cfg.latency_rounds,
                             max_rounds=3 * cfg.latency_rounds, time_cap_s=30.0, threads=cfg.threads)

    def measure(paths: list[Path]) -> list[float]:
        arts = {f"{i}:{p.name}": OnnxArtifact(p, sha256_file(p), cfg.opset, spec) for i, p in enumerate(paths)}
        names = list(arts)
        result = compare(target, arts, settings, reference=names[0])
        return [result.latency(n) for n in names]
    return measure


def speed_guard(qmodel: nn.Module, backend: QuantBackend, float_path: Path, int8_path: Path, spec: InputSpec, cfg: QuantizeConfig,
                rules: QuantRules, target: str, measure: Measure, progress=lambda m: None) -> dict[str, Any]:
    """Float vs INT8 on the target. If INT8 is not faster, greedily drop the Q/DQ of one layer at a time
    (kept only when it made the model faster) until INT8 wins or every layer was tried.

    Leaves the best INT8 model at int8_path and its quantizer switches in qmodel."""
    float_ms, int8_ms = measure([float_path, int8_path])
    out: dict[str, Any] = {"measured": True, "float_p50_ms": float_ms, "int8_p50_ms": int8_ms, "initial_int8_p50_ms": int8_ms,
                           "decisions": [], "excluded_layers": []}
    progress(f"latency p50: float {float_ms:.3f} ms, INT8 {int8_ms:.3f} ms")
    if int8_ms < float_ms:
        out["verdict"] = "int8 faster"
        return out
    progress("INT8 is not faster than float here; trying to exclude the layers that lose")
    candidate = int8_path.with_name(".candidate.onnx")
    for layer, quantizers in backend.layers(qmodel).items():
        backend.set_enabled(quantizers, False)
        export_qdq(qmodel, spec, candidate, cfg, rules, target)
        best_ms, cand_ms = measure([int8_path, candidate])
        keep = cand_ms < best_ms
        out["decisions"].append({"layer": layer, "int8_p50_ms": best_ms, "without_qdq_p50_ms": cand_ms,
                                 "decision": "run in float (faster without Q/DQ)" if keep else "keep INT8"})
        if keep:
            candidate.replace(int8_path)
            out["excluded_layers"].append(layer)
            out["float_p50_ms"], int8_ms = measure([float_path, int8_path])  # re-measure side by side: is INT8 faster now?
            if int8_ms < out["float_p50_ms"]:
                break
        else:
            backend.set_enabled(quantizers, True)
    candidate.unlink(missing_ok=True)
    out["int8_p50_ms"] = int8_ms
    out["verdict"] = "int8 faster after exclusions" if int8_ms < out["float_p50_ms"] else "int8 slower"
    return out


# ----------------------------------------------------------------------------------------------
# The whole pass


def quantize(model: ModelArtifact, teacher: ModelArtifact, data: DataBundle | None, target: Target, cfg: QuantizeConfig,
             stage_dir: Path, work_dir: Path, *, measure: Measure | None = None, progress=lambda m: None) -> dict[str, Any]:
    """QAD for `target`; writes stage_dir/model.onnx (INT8 QDQ), float.onnx and result.json.

    `work_dir` holds the resumable QAT state (kept across a killed run, removed on success).
    `measure` replaces the target's latency measurement (tests inject a deterministic one)."""
    started = time.perf_counter()
    rules = target.quant_rules
    backend = resolve_backend(cfg, rules, target.name)
    check_inputs(model, teacher, data)
    assert data is not None
    torch.manual_seed(cfg.seed)
    spec = model.input_spec
    example = spec.example(batch=2)
    teacher_module = teacher.module.eval()
    eval_loader = data.loader("eval", batch_size=512)
    eval_teacher = torch_predictions(teacher_module, eval_loader)[0]
    n_calib = min(cfg.calib_samples, len(data.calibration))
    calibration = calibration_batches(data, n_calib)

    progress("folding BatchNorm into convolutions")
    folded = fold_batchnorm(model.module)
    float_eval = evaluate(model.module.eval(), eval_teacher, eval_loader)
    progress(f"PTQ: calibrating {backend.name} quantizers on {n_calib} samples")
    qmodel = backend.quantize(folded, rules, example, calibration)
    backend.refresh_weight_scales(qmodel)
    ptq_eval = evaluate(qmodel, eval_teacher, eval_loader)
    ptq_scales = backend.scales(qmodel)

    work_dir.mkdir(parents=True, exist_ok=True)
    train = qat(qmodel, backend, teacher_module, data, cfg, calibration, work_dir, example, progress) if cfg.epochs else \
        {"history": [], "best_epoch": 0, "loss_weights": {}}
    qad_eval = evaluate(qmodel, eval_teacher, eval_loader)

    progress("exporting float and INT8 QDQ ONNX")
    float_path, int8_path = stage_dir / FLOAT_FILE, stage_dir / MODEL_FILE
    export_qdq(folded, spec, float_path, cfg, None, target.name)
    graph = export_qdq(qmodel, spec, int8_path, cfg, rules, target.name)

    guard: dict[str, Any] = {"measured": False, "decisions": [], "excluded_layers": []}
    if cfg.speed_guard:
        availability = target.available()
        if measure is None and not availability.available:
            guard["reason"] = f"target {target.name} cannot measure here ({availability.reason}); the guard runs where it can"
            progress(f"speed guard skipped: {guard['reason']}")
        else:
            progress(f"speed guard: float vs INT8 on {target.name}, interleaved")
            guard = speed_guard(qmodel, backend, float_path, int8_path, spec, cfg, rules, target.name,
                                measure or target_measure(target, spec, cfg), progress)
            if guard["excluded_layers"]:
                graph = export_qdq(qmodel, spec, int8_path, cfg, rules, target.name)
            if guard["verdict"] == "int8 slower" and not cfg.allow_slower and cfg.fallback_to_float:
                progress(f"INT8 is slower than float on {target.name}: shipping the float model (fallback_to_float)")
                shutil.copyfile(float_path, int8_path)
                guard["shipped"] = "float"
            elif guard["verdict"] == "int8 slower" and not cfg.allow_slower:
                raise SpeedGuardError(
                    f"the INT8 model is slower than the float one on {target.name} (p50 {guard['int8_p50_ms']:.3f} ms vs "
                    f"{guard['float_p50_ms']:.3f} ms) even after excluding {len(guard['excluded_layers'])} layer(s); "
                    "nothing was written. Re-run with --allow-slower to ship it anyway")
            guard["shipped_although_slower"] = guard["verdict"] == "int8 slower"
    shipped_float = guard.get("shipped") == "float"
    shipped_module = folded if shipped_float else qmodel
    shipped_eval = float_eval if shipped_float else (evaluate(qmodel, eval_teacher, eval_loader) if guard["excluded_layers"] else qad_eval)

    progress(f"parity: ONNX Runtime vs the {'float' if shipped_float else 'fake-quant'} torch model on eval samples")
    x, _ = data.batch("eval", cfg.parity_samples)
    # a shipped float model must match its torch source as tightly as any float export, not within INT8 rounding
    parity = check_parity(shipped_module, int8_path, x, replace(cfg, parity_rel_tol=1e-4) if shipped_float else cfg)
    parity["inputs"] = f"{len(x)} samples of the eval split of {data.name}"
    if not parity["passed"]:
        raise ParityError(f"INT8 parity failed: max |logit diff| {parity['max_abs_diff']:.3g} (allowed {parity['tolerance_max_abs']:.3g}), "
                          f"top-1 agreement {parity['top1_agreement']:.4f} (required {cfg.parity_min_top1}) on {parity['inputs']}")
    onnx_eval = _onnx_eval(int8_path, eval_teacher, eval_loader)
    shutil.rmtree(work_dir, ignore_errors=True)
    fmt = lambda ev: ev["accuracy"]  # noqa: E731
    result = {
        "target": {"name": target.name, "quant_rules": asdict(rules)},
        "backend": {"name": backend.name, "version": backend.version(), "chosen": "auto (target rules)" if cfg.backend == "auto" else "user"},
        "model": {"source": model.source, "sha256": model.sha256, "params": count_params(model.module),
                  "macs": count_macs(model.module, spec.example())},
        "teacher": {"source": teacher.source, "sha256": teacher.sha256},
        "accuracy": {"split": "eval", "float": float_eval, "ptq": ptq_eval, "qad": qad_eval, "shipped": shipped_eval,
                     "int8_onnx": onnx_eval,
                     "qad_minus_float_pct_points": None if fmt(float_eval) is None else 100 * (fmt(qad_eval) - fmt(float_eval))},
        "best_epoch": train["best_epoch"],
        "selected_on": "calibration split (epoch 0 = PTQ)",
        "loss_weights": train["loss_weights"],
        "calibration_samples": n_calib,
        "ptq_activation_scales": ptq_scales,
        "graph": graph,
        "shipped": "float (INT8 was slower on the target)" if shipped_float else "int8",
        "parity": parity,
        "latency": guard,
        "speedup_p50": guard["float_p50_ms"] / guard["int8_p50_ms"] if guard.get("measured") else None,
        "config": asdict(cfg),
        "data": data.describe(),
        "history": train["history"],
        "files": {"model.onnx": {"sha256": sha256_file(int8_path), "bytes": int8_path.stat().st_size},
                  "float.onnx": {"sha256": sha256_file(float_path), "bytes": float_path.stat().st_size}},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(stage_dir / "result.json", result)
    result["fake_quant_model"] = qmodel  # for callers in-process; not serialised
    return result


class QuantizePass(PassBase):
    name: ClassVar[str] = "quantize"
    Config: ClassVar[type] = QuantizeConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = OnnxArtifact  # QDQ export is part of quantization: the next pass is profile, not export
    requires: ClassVar[Requires] = Requires(data=True, logits=True)
    produces_stage: ClassVar[bool] = True

    def check(self, cfg: QuantizeConfig, ctx: Context) -> None:
        resolve_backend(cfg, ctx.target.quant_rules, ctx.target.name)

    def run(self, ctx: Context, inp: ModelArtifact, cfg: QuantizeConfig) -> OnnxArtifact:
        """`inp` is the float model; ctx.teacher the teacher (the float model itself when absent)."""
        run_dir = ctx.run_dir / self.name
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx.progress(f"quantization-aware distillation for {ctx.target.name} ({cfg.epochs} QAT epochs)")
        result = quantize(inp, ctx.teacher or inp, ctx.data, ctx.target, replace(cfg), run_dir, ctx.run_dir / f".{self.name}-work",
                          progress=ctx.progress)
        result.pop("fake_quant_model")
        ctx.results[self.name] = {k: v for k, v in result.items() if k not in ("history", "ptq_activation_scales")}
        path = run_dir / MODEL_FILE
        spec = inp.input_spec
        return OnnxArtifact(path, sha256_file(path), cfg.opset, spec, "pytorch (legacy exporter) + squeeze QDQ tidy", result["parity"],
                            [*inp.provenance, {"pass": "quantize", "config": asdict(cfg), "backend": result["backend"]}])
