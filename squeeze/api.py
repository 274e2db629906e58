"""Python API. The CLI is a thin shell over these functions; each returns JSON-ready data."""

from __future__ import annotations

import datetime as dt
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.artifacts import ModelArtifact, OnnxArtifact
from squeeze.data import BUNDLED, DataBundle, SplitConfig, load_data
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.fsutil import atomic_dir, check_output_path, write_json_atomic
from squeeze.modelio import load_any, load_model
from squeeze.targets import get_target, target_names
from squeeze.targets.base import ProfileSpec

Progress = Callable[[str], None]


def silent(message: str) -> None:
    pass


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    return {
        "squeeze": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def parse_duration_ms(text: str | float | None) -> float | None:
    """'2ms', '500us', '0.5s' or a bare number of milliseconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|us|µs|s)?\s*", text)
    if not match:
        raise UserInputError(f"latency budget must look like 2ms, 500us or 0.5s, got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "ms"
    return value * {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}[unit]


def open_data(spec: str | None, model: ModelArtifact | None = None, split_seed: int | None = None) -> DataBundle | None:
    """The dataset the user named, else the bundled one a sample teacher records it was trained on.

    The split seed is the one the teacher recorded for that dataset (so its held-out eval split
    stays held out), else 0; it never follows a training seed, or the eval split would change
    with every seed and could hold images the teacher trained on.
    """
    recorded = model.metadata if model is not None else {}
    if spec is None and recorded.get("dataset") in BUNDLED:
        spec = recorded["dataset"]
    if split_seed is None:
        split_seed = int(recorded.get("split", {}).get("seed", 0)) if recorded.get("dataset") == spec else 0
    return load_data(spec, SplitConfig(seed=split_seed)) if spec else None


# ----------------------------------------------------------------------------------------------


def inspect(path: str | Path, *, arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False) -> dict[str, Any]:
    """Input spec, parameters, MACs and a per-layer summary of a torch or ONNX model."""
    from squeeze.analysis import count_macs, count_params, layer_summary, onnx_summary, op_histogram

    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    if isinstance(art, OnnxArtifact):
        return {"path": str(path), "format": "onnx", "sha256": art.sha256, "input_spec": art.input_spec.to_dict(), **onnx_summary(art.path)}
    example = art.input_spec.example()
    layers = layer_summary(art.module, example) if art.format != "torchscript" else []  # no hooks on ScriptModules
    return {
        "path": str(path),
        "format": art.format,
        "sha256": art.sha256,
        "input_spec": art.input_spec.to_dict(),
        "params": count_params(art.module),
        "macs": count_macs(art.module, example),
        "layer_types": op_histogram(art.module),
        "layers": layers,
        "metadata": art.metadata,
    }


def export(
    path: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    opset: int = 18,
    exporter: str = "dynamo",
    dynamic_batch: bool = True,
) -> dict[str, Any]:
    """Export a torch model to ONNX with a parity check on real eval samples."""
    from squeeze.passes.export import ExportConfig, export_onnx

    cfg = ExportConfig(opset=opset, exporter=exporter, dynamic_batch=dynamic_batch)
    out = check_output_path(Path(out))
    art = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    bundle = open_data(data, art)
    onnx_art = export_onnx(art, out, cfg, bundle)
    return {"source": art.describe(), **onnx_art.describe(), "bytes": out.stat().st_size,
            "exporter": onnx_art.provenance[-1]["exporter"], "versions": versions()}


def profile(
    path: str | Path,
    *,
    target: str = "cpu",
    batch_size: int = 1,
    warmup: int = 20,
    iterations: int = 200,
    threads: int | None = None,
    data: str | None = None,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Measure latency on a target. A torch model is exported (with parity) to a temporary ONNX first."""
    from squeeze.passes.export import ExportConfig, export_onnx

    tgt = get_target(target)
    spec = ProfileSpec(batch_size=batch_size, warmup=warmup, iterations=iterations, threads=threads)
    availability = tgt.available()
    if not availability.available:
        raise TargetUnavailableError(f"target {target} is unavailable here: {availability.reason}")
    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    exported: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="squeeze-profile-") as tmp:
        if isinstance(art, ModelArtifact):
            onnx_art = export_onnx(art, Path(tmp) / "model.onnx", ExportConfig(), open_data(data, art))
            exported = {"parity": onnx_art.parity, "opset": onnx_art.opset}
        else:
            onnx_art = art
        stats = tgt.profile(onnx_art, spec)
    return {"model": str(path), "model_sha256": art.sha256, **({"exported": exported} if exported else {}), **stats.to_dict()}


def _initial_student(spec: str, teacher: ModelArtifact, seed: int) -> tuple[Any, str, dict[str, Any]]:
    """The student named by `spec`, freshly initialised from `seed`, shaped for the teacher's input and classes."""
    import torch

    from squeeze.students import build_student, load_student_spec

    arch, kwargs = load_student_spec(spec)
    with torch.no_grad():
        num_classes = int(teacher.module(teacher.input_spec.example(batch=2)).shape[-1])
    torch.manual_seed(seed)
    module, kwargs = build_student(arch, kwargs, teacher.input_spec.shape[1], num_classes)
    return module, arch, kwargs


def _prepare_distill(teacher_path, student, data, arch, input_shape, trust_pickle, config):
    """Load teacher, data and a freshly initialised student; validate the config. Same in every process."""
    from squeeze.passes.distill import DistillConfig

    cfg = DistillConfig(**config)
    teacher = load_model(teacher_path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    bundle = open_data(data, teacher)
    if bundle is None:
        raise UserInputError("distillation needs data: pass --data (labels optional)")
    module, student_arch, student_kwargs = _initial_student(student, teacher, cfg.seed)
    return teacher, module, bundle, cfg, student_arch, student_kwargs


def _distill_worker(rank: int, world: int, port: int, args: dict[str, Any], show_progress: bool) -> None:
    """One DistributedDataParallel process (started by torch.multiprocessing.spawn)."""
    import os

    import torch
    import torch.distributed as dist

    from squeeze.passes.distill import distill as run_distill
    from squeeze.targets.ort_runtime import usable_cores

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    config = dict(args["config"])
    if config.get("device", "cpu").startswith("cuda"):
        torch.cuda.set_device(rank)
        config["device"] = f"cuda:{rank}"
    dist.init_process_group("nccl" if config.get("device", "cpu").startswith("cuda") else "gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, usable_cores() // world))
    try:
        prepare_args = {k: v for k, v in args.items() if k != "out"}
        teacher, module, bundle, cfg, student_arch, student_kwargs = _prepare_distill(**{**prepare_args, "config": config})
        progress = (lambda m: print(f"… {m}", file=sys.stderr, flush=True)) if show_progress and rank == 0 else silent
        run_distill(teacher, module, bundle, cfg, Path(args["out"]), student_arch=student_arch, student_kwargs=student_kwargs, progress=progress)
    finally:
        dist.destroy_process_group()


def distill(
    teacher_path: str | Path,
    student: str,
    *,
    data: str | None = None,
    out: str | Path = "distill-out",
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    progress: Progress = silent,
    **config: Any,
) -> dict[str, Any]:
    """Train a student (JSON spec or pkg.mod:factory) from the teacher; writes OUT/student.pt + result.json.

    With nproc > 1 the training runs as DistributedDataParallel over that many local processes.
    """
    import json

    from squeeze.passes.distill import distill as run_distill

    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    teacher, module, bundle, cfg, student_arch, student_kwargs = _prepare_distill(teacher_path, student, data, arch, input_shape,
                                                                                  trust_pickle, config)
    if cfg.nproc == 1:
        return run_distill(teacher, module, bundle, cfg, out, student_arch=student_arch, student_kwargs=student_kwargs, progress=progress)

    import socket

    import torch.multiprocessing as mp

    from squeeze.errors import SqueezeError
    from squeeze.passes.distill import check_inputs, resolve_weights

    check_inputs(teacher, module, bundle)  # bad input fails here, in one process, before any worker starts
    resolve_weights(cfg, bundle.has_labels)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = {"teacher_path": str(teacher_path), "student": student, "data": data, "arch": arch, "input_shape": input_shape,
            "trust_pickle": trust_pickle, "config": config, "out": str(out)}
    (out / "result.json").unlink(missing_ok=True)
    try:
        mp.spawn(_distill_worker, args=(cfg.nproc, port, args, progress is not silent), nprocs=cfg.nproc, join=True)
    except mp.ProcessRaisedException as exc:
        last = [line for line in str(exc).splitlines() if line.strip()][-1]
        raise SqueezeError(f"distributed distillation failed in a worker: {last}") from None
    return json.loads((out / "result.json").read_text())


def list_targets() -> list[dict[str, Any]]:
    rows = []
    for name in target_names():
        tgt = get_target(name)
        availability = tgt.available()
        rows.append({
            "name": name,
            "description": tgt.description,
            "available": availability.available,
            "reason": availability.reason,
            "channel_multiple": tgt.channel_multiple,
            "quant_rules": asdict(tgt.quant_rules),
            "details": availability.details,
        })
    return rows


def compress(
    path: str | Path,
    *,
    target: str = "cpu",
    out: str | Path = "squeeze-out",
    data: str | None = None,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    latency_budget: str | float | None = None,
    max_accuracy_drop: float | None = None,
    profile_spec: ProfileSpec | None = None,
    student: str | None = None,
    distill_options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Progress = silent,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Run the pass pipeline and write DIR/model.onnx + DIR/manifest.json.

    Today's pipeline: [distill the given student] -> export -> profile. With a student, the teacher
    is exported and profiled too, so the manifest holds both latencies and their ratio.
    Everything is validated before any work; the output directory appears only when complete.
    """
    from squeeze import pipeline
    from squeeze.analysis import count_macs, count_params, onnx_summary
    from squeeze.evaluate import compare, onnx_predictions, torch_predictions
    from squeeze.passes.base import Context
    from squeeze.passes.export import ExportConfig, ExportPass
    from squeeze.passes.profile import ProfileConfig, ProfilePass

    budget_ms = parse_duration_ms(latency_budget)
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise UserInputError("--max-accuracy-drop must be >= 0 (percentage points)")
    tgt = get_target(target)
    availability = tgt.available()
    if not availability.available:
        raise TargetUnavailableError(f"target {target} is unavailable here: {availability.reason}")
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise UserInputError(f"{out} exists and is not a squeeze output directory; choose another --out")

    progress("loading model")
    teacher = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    bundle = open_data(data, teacher)
    if max_accuracy_drop is not None and (bundle is None or not bundle.has_labels):
        raise UserInputError("--max-accuracy-drop needs a labelled dataset (--data)")
    spec = profile_spec or ProfileSpec()
    steps = [
        pipeline.Step(ExportPass(), ExportConfig()),
        pipeline.Step(ProfilePass(), ProfileConfig(spec)),
    ]
    first = teacher
    if student is not None:
        from squeeze.passes.distill import DistillConfig, DistillPass, check_inputs, resolve_weights

        if bundle is None:
            raise UserInputError("distilling a student needs data: pass --data")
        distill_cfg = DistillConfig(**{"seed": seed, **(distill_options or {})})
        module, student_arch, student_kwargs = _initial_student(student, teacher, distill_cfg.seed)
        check_inputs(teacher, module, bundle)
        resolve_weights(distill_cfg, bundle.has_labels)
        first = ModelArtifact(module, teacher.input_spec, student, "student-spec", "", {"arch": student_arch, "arch_kwargs": student_kwargs})
        steps.insert(0, pipeline.Step(DistillPass(), distill_cfg))
    pipeline.validate(steps, ModelArtifact)
    started = dt.datetime.now(dt.timezone.utc)
    with atomic_dir(out) as stage:
        ctx = Context(run_dir=stage, target=tgt, data=bundle, teacher=teacher, progress=progress)
        onnx_art, records = pipeline.run(steps, ctx, first)
        teacher_latency = None
        if student is not None:
            from squeeze.passes.export import export_onnx

            progress("exporting and profiling the teacher for comparison")
            with tempfile.TemporaryDirectory(prefix="squeeze-teacher-") as tmp:
                teacher_onnx = export_onnx(teacher, Path(tmp) / "teacher.onnx", ExportConfig(), bundle)
                teacher_latency = tgt.profile(teacher_onnx, spec).to_dict()
        accuracy = None
        if bundle is not None:
            progress("evaluating teacher (torch) and output (ONNX Runtime) on the eval split")
            loader = bundle.loader("eval", batch_size=256)
            accuracy = compare(torch_predictions(teacher.module, loader), onnx_predictions(onnx_art.path, loader), "eval")
        latency = ctx.results["profile"]
        gate = _gate(latency, accuracy, ctx.results["export"]["parity"], budget_ms, max_accuracy_drop)
        summary = onnx_summary(onnx_art.path)
        manifest = {
            "squeeze_version": __version__,
            "created_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command or sys.argv,
            "target": {"name": tgt.name, "description": tgt.description, "availability": availability.reason},
            "teacher": {
                **teacher.describe(),
                "params": count_params(teacher.module),
                "macs": count_macs(teacher.module, teacher.input_spec.example()),
                "recorded": {k: teacher.metadata[k] for k in ("dataset", "eval_accuracy", "arch") if k in teacher.metadata},
            },
            "data": bundle.describe() if bundle else None,
            "student": ({k: v for k, v in ctx.results["distill"].items() if k not in ("data", "teacher")} if student is not None else None),
            "passes": records,
            "outputs": {
                "model.onnx": {
                    "sha256": onnx_art.sha256,
                    "bytes": onnx_art.path.stat().st_size,
                    "opset": onnx_art.opset,
                    "input_spec": onnx_art.input_spec.to_dict(),
                    "params": summary["params"],
                    "macs": summary["macs"],
                    "exporter": ctx.results["export"]["exporter"],
                }
            },
            "parity": ctx.results["export"]["parity"],
            "accuracy": accuracy,
            "latency": latency,
            "teacher_latency": teacher_latency,
            "speedup_p50": teacher_latency["p50_ms"] / latency["p50_ms"] if teacher_latency else None,
            "gate": gate,
            "versions": versions(),
        }
        write_json_atomic(stage / "manifest.json", manifest)
    return {"out": str(out), **manifest}


def _gate(latency: dict[str, Any], accuracy: dict[str, Any] | None, parity: dict[str, Any],
          budget_ms: float | None, max_drop: float | None) -> dict[str, Any]:
    """The verdict a CI job gates on: every requested check must hold."""
    checks = [{"check": "onnx_parity", "passed": bool(parity["passed"]), "value": parity["max_abs_diff"],
               "limit": parity["tolerance_max_abs"]}]
    if budget_ms is not None:
        checks.append({"check": "latency_p90_ms", "passed": latency["p90_ms"] <= budget_ms, "value": latency["p90_ms"], "limit": budget_ms})
    if max_drop is not None:
        drop = 100.0 * (accuracy["teacher_accuracy"] - accuracy["output_accuracy"])
        checks.append({"check": "accuracy_drop_pct_points", "passed": drop <= max_drop, "value": drop, "limit": max_drop})
    return {"verdict": "pass" if all(c["passed"] for c in checks) else "fail", "checks": checks}


def parse_latency_budget(text: str | float | None) -> tuple[float | None, float | None]:
    """'1ms' / '500us' -> (1.0, None) in ms; '0.5x' -> (None, 0.5), a fraction of the input model's measured latency."""
    if isinstance(text, str) and text.strip().lower().endswith("x"):
        try:
            return None, float(text.strip()[:-1])
        except ValueError:
            raise UserInputError(f"relative latency budget must look like 0.5x, got {text!r}") from None
    return parse_duration_ms(text), None


def prune(
    path: str | Path,
    *,
    teacher: str | Path | None = None,
    data: str | None = None,
    target: str = "cpu",
    latency_budget: str | float | None = None,
    out: str | Path = "prune-out",
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    progress: Progress = silent,
    **config: Any,
) -> dict[str, Any]:
    """Structured pruning toward a latency budget measured on the target, recovered by (layer) distillation.

    Writes OUT/model.pt (a squeeze checkpoint that records the pruned structure) and OUT/result.json,
    staged so that OUT appears only when complete. `result["budget_met"]` is False when the budget
    was not reached (the best model reached is still written).
    """
    from squeeze.passes.prune import MODEL_FILE, PruneConfig, check_float_model
    from squeeze.passes.prune import prune as run_prune

    budget_ms, budget_ratio = parse_latency_budget(latency_budget)
    cfg = PruneConfig(latency_budget_ms=budget_ms, latency_budget_ratio=budget_ratio, **config)
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "result.json").exists())):
        raise UserInputError(f"{out} exists and is not a squeeze prune output directory; choose another --out")
    tgt = get_target(target)
    model = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    check_float_model(model)
    teacher_art = load_model(teacher, trust_pickle=trust_pickle) if teacher is not None else None
    bundle = open_data(data, model)
    if bundle is None:
        raise UserInputError("pruning needs data for calibration, recovery and evaluation: pass --data")
    if not tgt.available().available and not callable(getattr(tgt, "predict", None)):
        raise TargetUnavailableError(f"target {target} cannot measure latency here and has no offline predictor: {tgt.available().reason}")
    with atomic_dir(out) as stage:
        result = run_prune(model, bundle, tgt, cfg, stage, teacher=teacher_art, progress=progress)
        result["model_file"] = str(out / MODEL_FILE)
        write_json_atomic(stage / "result.json", result)
    return {"out": str(out), **result, "versions": versions()}
