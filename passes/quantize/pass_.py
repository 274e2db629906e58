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

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from squeeze.measure.analysis import count_macs, count_params, eval_mode
from squeeze.io.artifacts import ModelArtifact, OnnxArtifact
from squeeze.io.data import DataBundle
from squeeze.errors import ParityError, UserInputError
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.passes.base import Context, PassBase, Requires
from squeeze.passes.quantize.backends import fold_batchnorm
from squeeze.targets.base import Target
from squeeze.train.trainer import epoch_steps

from squeeze.passes.quantize.config import (FLOAT_FILE, MODEL_FILE, STATE_FILE, Measure, QuantizeConfig, SpeedGuardError,  # noqa: F401
                                           _onnx_eval, calibration_batches, check_inputs, evaluate, reference, resolve_backend)
from squeeze.passes.quantize.onnx_qdq import agreement, check_parity, export_qdq, speed_guard, target_measure  # noqa: F401
from squeeze.passes.quantize.qat import _score, qat  # noqa: F401

__all__ = ["calibration_batches", "FLOAT_FILE", "MODEL_FILE", "STATE_FILE", "QuantizeConfig", "QuantizePass", "SpeedGuardError", "check_inputs", "check_parity",
           "export_qdq", "quantize", "resolve_backend", "speed_guard", "target_measure"]


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
    logits = model.output_kind(data) == "logits"  # else a map or values: output matching, output NMSE
    run = _ptq(model, teacher, data, cfg, backend, rules, progress, logits)
    work_dir.mkdir(parents=True, exist_ok=True)
    train = qat(run["qmodel"], backend, run["teacher"], data, cfg, run["calibration"], work_dir, model.input_spec.example(batch=2), progress,
                logits) if cfg.epochs else {"history": [], "best_epoch": 0, "loss_weights": {}}
    run["qad_eval"] = evaluate(run["qmodel"], run["eval_teacher"], run["eval_loader"])
    progress("exporting float and INT8 QDQ ONNX")
    float_path, int8_path = stage_dir / FLOAT_FILE, stage_dir / MODEL_FILE
    export_qdq(run["folded"], model.input_spec, float_path, cfg, None, target.name)
    graph = export_qdq(run["qmodel"], model.input_spec, int8_path, cfg, rules, target.name)
    guard, graph = _guard(run, backend, model, target, cfg, float_path, int8_path, graph, measure, progress)
    parity, onnx_eval, shipped_float, shipped_eval = _check_shipped(run, data, cfg, guard, int8_path, progress, target, model.input_spec)
    shutil.rmtree(work_dir, ignore_errors=True)
    fmt = lambda ev: ev["accuracy"]  # noqa: E731
    float_eval, qad_eval = run["float_eval"], run["qad_eval"]
    result = {
        "target": {"name": target.name, "quant_rules": asdict(rules)},
        "backend": {"name": backend.name, "version": backend.version(), "chosen": "auto (target rules)" if cfg.backend == "auto" else "user"},
        "model": {"source": model.source, "sha256": model.sha256, "params": count_params(model.module),
                  "macs": count_macs(model.module, model.input_spec.example())},
        "teacher": {"source": teacher.source, "sha256": teacher.sha256},
        "accuracy": {"split": "eval", "float": float_eval, "ptq": run["ptq_eval"], "qad": qad_eval, "shipped": shipped_eval, "int8_onnx": onnx_eval,
                     "qad_minus_float_pct_points": None if fmt(float_eval) is None else 100 * (fmt(qad_eval) - fmt(float_eval))},
        "best_epoch": train["best_epoch"], "selected_on": "calibration split (epoch 0 = PTQ)", "loss_weights": train["loss_weights"],
        "distillation": _distillation(train, logits),
        "calibration_samples": run["n_calib"], "ptq_activation_scales": run["ptq_scales"], "graph": graph,
        "float_input_layers": run["float_input_layers"],
        "shipped": "float (INT8 was slower on the target)" if shipped_float else "int8",
        "parity": parity, "latency": guard,
        "speedup_p50": guard["float_p50_ms"] / guard["int8_p50_ms"] if guard.get("measured") else None,
        "config": asdict(cfg), "data": data.describe(), "history": train["history"],
        "files": {"model.onnx": {"sha256": sha256_file(int8_path), "bytes": int8_path.stat().st_size},
                  "float.onnx": {"sha256": sha256_file(float_path), "bytes": float_path.stat().st_size}},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(stage_dir / "result.json", result)
    result["fake_quant_model"] = run["qmodel"]  # for callers in-process; not serialised
    return result


def _ptq(model: ModelArtifact, teacher: ModelArtifact, data: DataBundle, cfg: QuantizeConfig, backend: Any, rules: Any, progress,
         logits: bool = True) -> dict[str, Any]:
    """Fold BatchNorm, insert and calibrate the quantizers; the float and PTQ figures on the eval split."""
    teacher_module = eval_mode(teacher.module)  # a .pt2 teacher keeps its exported mode
    eval_loader = data.loader("eval", batch_size=512)
    eval_teacher = reference(teacher_module, eval_loader, data, logits)
    n_calib = min(cfg.calib_samples, len(data.calibration))
    calibration = calibration_batches(data, n_calib)
    progress("folding BatchNorm into convolutions")
    folded = fold_batchnorm(model.module)
    float_eval = evaluate(model.module.eval(), eval_teacher, eval_loader)
    progress(f"PTQ: calibrating {backend.name} quantizers on {n_calib} samples")
    qmodel = backend.quantize(folded, rules, model.input_spec.example(batch=2), calibration)
    float_inputs = backend.float_input_layers(qmodel, cfg.float_input_max_channels) if cfg.float_input_max_channels else {}
    for layer, quantizers in float_inputs.items():
        progress(f"{layer} reads the {model.input_spec.shape[1]}-channel input: it runs in float (--float-input-max-channels)")
        backend.set_enabled(quantizers, False)
    backend.refresh_weight_scales(qmodel)
    return {"teacher": teacher_module, "eval_loader": eval_loader, "eval_teacher": eval_teacher, "n_calib": n_calib, "calibration": calibration,
            "folded": folded, "float_eval": float_eval, "qmodel": qmodel, "ptq_eval": evaluate(qmodel, eval_teacher, eval_loader),
            "ptq_scales": backend.scales(qmodel), "logits": logits,
            "float_input_layers": list(float_inputs)}


def _distillation(train: dict[str, Any], logits: bool) -> dict[str, Any]:
    """What QAT trained on, and its mean loss terms per epoch (each as computed; 'loss' is their weighted sum)."""
    weights = {k: round(v, 6) for k, v in train["loss_weights"].items()}
    objective = " + ".join(("output matching (normalised MSE to the teacher's outputs)" if k == "output" else k) for k in weights)
    epochs = [{k: v for k, v in h.items() if k == "epoch" or k == "loss" or k in weights} for h in train["history"] if h.get("phase") == "qat"]
    return {"objective": objective or "none (PTQ only)", "weights": weights, "epochs": epochs, "logits": logits}


def _guard(run: dict[str, Any], backend: Any, model: ModelArtifact, target: Target, cfg: QuantizeConfig, float_path: Path, int8_path: Path,
           graph: dict[str, Any], measure: Measure | None, progress) -> tuple[dict[str, Any], dict[str, Any]]:
    """Float vs INT8 on the target (layers that lose run in float); a slower INT8 falls back or fails as configured."""
    guard: dict[str, Any] = {"measured": False, "decisions": [], "excluded_layers": []}
    if not cfg.speed_guard:
        return guard, graph
    availability = target.available()
    if measure is None and not availability.available:
        guard["reason"] = f"target {target.name} cannot measure here ({availability.reason}); the guard runs where it can"
        progress(f"speed guard skipped: {guard['reason']}")
        return guard, graph
    progress(f"speed guard: float vs INT8 on {target.name}, interleaved")
    rules, spec = target.quant_rules, model.input_spec
    guard = speed_guard(run["qmodel"], backend, float_path, int8_path, spec, cfg, rules, target.name,
                        measure or target_measure(target, spec, cfg), progress, already_float=run["float_input_layers"])
    if guard["excluded_layers"]:
        graph = export_qdq(run["qmodel"], spec, int8_path, cfg, rules, target.name)
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
    return guard, graph


def _check_shipped(run: dict[str, Any], data: DataBundle, cfg: QuantizeConfig, guard: dict[str, Any], int8_path: Path,
                   progress, target: Target | None = None, spec: Any = None) -> tuple[dict[str, Any], dict[str, Any], bool, dict[str, Any]]:
    """Parity of the shipped file against its torch model (INT8 rounding allowed only for INT8), and its eval figures."""
    shipped_float = guard.get("shipped") == "float"
    shipped_module = run["folded"] if shipped_float else run["qmodel"]
    shipped_eval = run["float_eval"] if shipped_float else (
        evaluate(run["qmodel"], run["eval_teacher"], run["eval_loader"]) if guard["excluded_layers"] else run["qad_eval"])
    progress(f"parity: ONNX Runtime vs the {'float' if shipped_float else 'fake-quant'} torch model on eval samples")
    x, _ = data.batch("eval", cfg.parity_samples)
    # a shipped float model must match its torch source as tightly as any float export, not within INT8 rounding
    parity = check_parity(shipped_module, int8_path, x, replace(cfg, parity_rel_tol=1e-4) if shipped_float else cfg, run["logits"])
    parity["inputs"] = f"{len(x)} samples of the eval split of {data.name}"
    if not parity["passed"]:
        raise ParityError(f"INT8 parity failed: max |output diff| {parity['max_abs_diff']:.3g} (allowed {parity['tolerance_max_abs']:.3g}), "
                          f"top-1 agreement {parity['top1_agreement']} (required {cfg.parity_min_top1}) on {parity['inputs']}")
    if target is not None:
        parity["target_runtime"] = runtime_parity(target, shipped_module, int8_path, x, replace(cfg, parity_rel_tol=1e-4) if shipped_float else cfg,
                                                  spec, progress, run["logits"])
    return parity, _onnx_eval(int8_path, run["eval_teacher"], run["eval_loader"]), shipped_float, shipped_eval


@torch.no_grad()
def runtime_parity(target: Target, module: torch.nn.Module, path: Path, x: torch.Tensor, cfg: QuantizeConfig, spec: Any,
                   progress=lambda m: None, logits: bool = True) -> dict[str, Any] | None:
    """Parity on the target's own runtime, for a target whose runtime is not ONNX Runtime (`target.infer` gives its
    outputs; openvino). Same tolerance as the ONNX Runtime check; None where the target has no runtime of its own
    or cannot run here (the ONNX Runtime check then stands for it)."""
    if not target.available().available:
        return None
    outputs = target.infer(OnnxArtifact(path, sha256_file(path), cfg.opset, spec), x.numpy())
    if outputs is None:
        return None
    progress(f"parity: {target.name}'s runtime vs the torch model on the same eval samples")
    reference = module.eval()(x).float().numpy()
    got = np.asarray(outputs)
    diff, spread = np.abs(got - reference), float(reference.max() - reference.min())
    top1 = agreement(got, reference, logits)
    out = {"runtime": target.name, "samples": int(len(x)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
           "tolerance_max_abs": cfg.parity_rel_tol * spread, "top1_agreement": top1, "min_top1_agreement": cfg.parity_min_top1}
    out["passed"] = bool(out["max_abs_diff"] <= out["tolerance_max_abs"] and (top1 is None or top1 >= cfg.parity_min_top1))
    if not out["passed"]:
        raise ParityError(f"parity on {target.name}'s runtime failed: max |logit diff| {out['max_abs_diff']:.3g} (allowed "
                          f"{out['tolerance_max_abs']:.3g}), top-1 agreement {top1} (required {cfg.parity_min_top1}) on {len(x)} eval samples")
    return out


class QuantizePass(PassBase):
    name: ClassVar[str] = "quantize"
    Config: ClassVar[type] = QuantizeConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = OnnxArtifact  # QDQ export is part of quantization: the next pass is profile, not export
    requires: ClassVar[Requires] = Requires(data=True)  # any output: logits get KD, maps and values output matching
    produces_stage: ClassVar[bool] = True
    lowers_precision: ClassVar[bool] = True  # compress ships INT8 only where its closing rounds measured it faster than the float input

    def check(self, cfg: QuantizeConfig, ctx: Context) -> None:
        resolve_backend(cfg, ctx.target.quant_rules, ctx.target.name)

    def check_input(self, cfg: QuantizeConfig, art: ModelArtifact) -> None:
        """QAT inserts fake-quant modules around the model's layers and trains them: a .pt2 or TorchScript graph has no
        layers to wrap (and its train/eval mode was fixed when it was exported), so it is refused before any work."""
        if art.format in ("pt2", "torchscript"):
            raise UserInputError(f"{art.source} is a {art.format} graph; INT8 QAT wraps and trains the model's layers, so it needs the "
                                 "model as an nn.Module (a squeeze checkpoint, or a state_dict with --arch). The default recipe takes "
                                 "the graph as a teacher: it searches and distils a student, which it then quantizes")

    def planned_work(self, cfg: QuantizeConfig, ctx: Context) -> tuple[int, int]:
        if ctx.data is None or cfg.epochs == 0:
            return 0, 0
        used = min(cfg.train_samples or len(ctx.data.train), len(ctx.data.train))
        steps, per_step = epoch_steps(used, cfg.batch_size)
        return cfg.epochs * steps * per_step, cfg.epochs

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
