"""Python API. The CLI is a thin shell over these functions; each returns JSON-ready data."""

from __future__ import annotations

import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.io.artifacts import ModelArtifact, OnnxArtifact
from squeeze.io.data import BUNDLED, DataBundle, SplitConfig, load_data
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.fsutil import atomic_dir, check_output_path, sha256_file, write_json_atomic
from squeeze.io.modelio import load_any, load_model
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
        return None if text is None else _positive_budget(float(text), text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|us|µs|s)?\s*", text)
    if not match:
        raise UserInputError(f"latency budget must look like 2ms, 500us or 0.5s, got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "ms"
    return _positive_budget(value * {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}[unit], text)


def _positive_budget(value: float, text: Any) -> float:
    import math

    if not math.isfinite(value) or value <= 0:
        raise UserInputError(f"a latency budget must be a positive duration, got {text!r}")
    return value


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
    bundle = load_data(spec, SplitConfig(seed=split_seed)) if spec else None
    if bundle is not None and model is not None:
        check_data_fits(bundle, model)
    return bundle


def _same_normalization(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return all(len(a.get(k, [])) == len(b.get(k, [])) and all(abs(x - y) <= 1e-3 for x, y in zip(a[k], b[k])) for k in ("mean", "std"))


def check_data_fits(bundle: DataBundle, model: ModelArtifact) -> None:
    """Before any work: the samples have the model's input shape, and no label names a class the model lacks."""
    expected = tuple(model.input_spec.shape[1:])
    if tuple(bundle.sample_shape) != expected:
        got, want = "x".join(map(str, bundle.sample_shape)), "x".join(map(str, expected))
        raise UserInputError(f"data {bundle.source} has samples of shape {got}, but the model takes {want}")
    recorded, given = model.input_spec.normalization, bundle.normalization
    if recorded and given and not _same_normalization(recorded, given):
        raise UserInputError(f"the model was trained on inputs normalised with {recorded}, but data {bundle.source} is normalised "
                             f"with {given}: its predictions would be meaningless")
    classes = model.output_classes
    if bundle.has_labels and classes is not None and bundle.num_classes is not None and bundle.num_classes > classes:
        from squeeze.io.data import all_labels

        labels = all_labels(bundle)
        bad = labels >= classes
        raise UserInputError(f"data {bundle.source}: {int(bad.sum())} labels are >= {classes}, the model's number of classes "
                             f"(values {sorted(set(labels[bad].tolist()))[:5]})")


# ----------------------------------------------------------------------------------------------


def inspect(path: str | Path, *, arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False) -> dict[str, Any]:
    """Input spec, parameters, MACs and a per-layer summary of a torch or ONNX model."""
    from squeeze.measure.analysis import count_macs, count_params, layer_summary, onnx_summary, op_histogram

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
    **remote: Any,
) -> dict[str, Any]:
    """Measure latency on a target. A torch model is exported (with parity) to a temporary ONNX first.

    Remote targets take `device` ("user@host[:port]"), `ssh` (SshOptions), `power_mode`,
    `remote_python`, `precision` (see remote_target). A target that cannot measure here but can
    predict (jetson-* without --device, tensorrt on a known GPU) returns a prediction, labelled
    `"measured": false` / `"label": "predicted"`. An engine file (.engine/.plan with a squeeze
    manifest) is measured as is on the target that built it, and refused elsewhere.
    """
    from squeeze.passes.export import ExportConfig, export_onnx

    tgt = remote_target(target, **remote)
    spec = ProfileSpec(batch_size=batch_size, warmup=warmup, iterations=iterations, threads=threads)
    availability = tgt.available()
    predicting = not availability.available
    if predicting and not tgt.can_predict():
        raise TargetUnavailableError(f"target {target} is unavailable here: {availability.reason}")
    if _is_engine(Path(path)):
        if Path(path).suffix.lower() not in tgt.engine_suffixes:
            raise UserInputError(f"{path} is a TensorRT engine: profile it with --target tensorrt or jetson-* (with --device), not {target}")
        if predicting:
            raise TargetUnavailableError(f"cannot measure engine {path} on {target} here ({availability.reason}); "
                                         "an engine can only be timed on the device that built it")
        stats = tgt.profile(Path(path), spec)
        return {"model": str(path), "model_sha256": sha256_file(Path(path)), "label": "measured", **stats.to_dict()}
    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    exported: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="squeeze-profile-") as tmp:
        if isinstance(art, ModelArtifact):
            onnx_art = export_onnx(art, Path(tmp) / "model.onnx", ExportConfig(), open_data(data, art))
            exported = {"parity": onnx_art.parity, "opset": onnx_art.opset}
        else:
            onnx_art = art
        stats = tgt.latency(onnx_art, spec)
    result = {"model": str(path), "model_sha256": art.sha256, **({"exported": exported} if exported else {}),
              "label": "predicted" if predicting else "measured", **stats.to_dict()}
    if predicting:
        result["why_predicted"] = availability.reason
    return result


def _initial_student(spec: str, teacher: ModelArtifact, seed: int) -> tuple[Any, str, dict[str, Any]]:
    """The student named by `spec`, freshly initialised from `seed`, shaped for the teacher's input and classes."""
    import torch

    from squeeze.io.students import build_student, load_student_spec

    arch, kwargs = load_student_spec(spec)
    with torch.no_grad():
        num_classes = int(teacher.module(teacher.input_spec.example(batch=2)).shape[-1])
    torch.manual_seed(seed)
    module, kwargs = build_student(arch, kwargs, teacher.input_spec.shape[1], num_classes)
    return module, arch, kwargs


def _prepare_distill(teacher_path, student, data, arch, input_shape, trust_pickle, config):
    """Load teacher, data and a freshly initialised student; validate the config. Same in every process."""
    from squeeze.passes.distill.pass_ import DistillConfig

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

    from squeeze.passes.distill.pass_ import distill as run_distill
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

    from squeeze.passes.distill.pass_ import distill as run_distill

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
    from squeeze.passes.distill.pass_ import check_inputs, resolve_weights

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
            "predicts": not availability.available and tgt.can_predict(),
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
    recipe: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    resume: bool = True,
    cache_dir: str | Path | None = None,
    progress: Progress = silent,
    command: list[str] | None = None,
    **remote: Any,
) -> dict[str, Any]:
    """Run the recipe's pass pipeline for a target: see squeeze.run.compress.compress. `remote`: as for profile (device, ssh options, ...)."""
    from squeeze.run.compress import compress as run_compress

    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if distill_options:
        overrides.setdefault("distill", {}).update(distill_options)
    return run_compress(path, target=target, out=out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                        latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop, profile_spec=profile_spec, student=student,
                        recipe=recipe, overrides=overrides, seed=seed, resume=resume, cache_dir=cache_dir, progress=progress,
                        command=command, remote={k: v for k, v in remote.items() if v is not None})


def print_recipe(recipe: str | Path | None = None, *, student: bool = False, overrides: dict[str, dict[str, Any]] | None = None) -> str:
    """The effective recipe `compress` would run, as YAML (validated, no work done)."""
    from squeeze.run.compress import effective_recipe

    return effective_recipe(recipe, student=student, overrides=overrides).to_yaml()


def gate(
    manifest: str | Path,
    *,
    max_latency_ms: str | float | None = None,
    percentile: int = 90,
    max_accuracy_drop: float | None = None,
    max_size_mb: float | None = None,
    baseline: str | Path | None = None,
    max_regression: str | float | None = None,
    max_accuracy_regression: float | None = None,
    reference: str | Path | None = None,
    max_latency_ratio: float | None = None,
    ratio_ci: float = 0.03,
    time_cap_s: float = 60.0,
    allow_predicted: bool = False,
    override_verdict: bool = False,
    junit: str | Path | None = None,
    progress: Progress = silent,
) -> dict[str, Any]:
    """Check a compress manifest against CI budgets; optionally write JUnit XML. See squeeze.run.gate."""
    from squeeze.run import gate as gating
    from squeeze.io.fsutil import write_bytes_atomic

    junit_path = check_output_path(Path(junit)) if junit is not None else None
    cfg = gating.GateConfig(
        max_latency_ms=parse_duration_ms(max_latency_ms),
        percentile=percentile,
        max_accuracy_drop=max_accuracy_drop,
        max_size_mb=max_size_mb,
        baseline=Path(baseline) if baseline is not None else None,
        max_regression=gating.parse_fraction(max_regression),
        max_accuracy_regression=max_accuracy_regression,
        reference=Path(reference) if reference is not None else None,
        max_latency_ratio=max_latency_ratio,
        ratio_ci=ratio_ci,
        time_cap_s=time_cap_s,
        allow_predicted=allow_predicted,
        override_verdict=override_verdict,
    )
    result = gating.evaluate(Path(manifest), cfg, progress=progress)
    if junit_path is not None:
        write_bytes_atomic(junit_path, gating.junit_xml(result).encode())
        result["junit"] = str(junit_path)
    return result


def quantize(
    path: str | Path,
    *,
    teacher: str | Path | None = None,
    data: str | None = None,
    target: str = "cpu",
    out: str | Path = "quant",
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    progress: Progress = silent,
    measure: Callable[[list[Path]], list[float]] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """INT8 quantization-aware distillation for a target: OUT/model.onnx (QDQ), OUT/float.onnx, OUT/result.json.

    The teacher defaults to the float model itself. Everything is validated before any work; OUT
    appears only when complete. A killed run resumes from OUT's sibling work directory.
    """
    from squeeze.passes.quantize.pass_ import QuantizeConfig, check_inputs, quantize as run_quantize, resolve_backend

    cfg = QuantizeConfig(**config)
    tgt = get_target(target)
    resolve_backend(cfg, tgt.quant_rules, tgt.name)
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "result.json").exists())):
        raise UserInputError(f"{out} exists and is not a squeeze quantize output directory; choose another --out")
    model = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    teacher_art = load_model(teacher, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle) if teacher else model
    bundle = open_data(data, model)
    check_inputs(model, teacher_art, bundle)
    work_dir = out.resolve().parent / f".{out.name}.work"
    with atomic_dir(out) as stage:
        result = run_quantize(model, teacher_art, bundle, tgt, cfg, stage, work_dir, measure=measure, progress=progress)
    result.pop("fake_quant_model", None)
    return {"out": str(out), **result, "versions": versions()}


# ----------------------------------------------------------------------------------------------
# TensorRT / Jetson / ssh:// (remote targets)

def _is_engine(path: Path) -> bool:
    from squeeze.targets.tensorrt import ENGINE_SUFFIXES

    return path.suffix.lower() in ENGINE_SUFFIXES and path.is_file()


def remote_target(target: str, **options: Any) -> Any:
    """The target configured from its command-line options (device, SSH, power mode, precision, ...); each
    target takes the options that apply to it and refuses the others (squeeze.targets.base.TargetOptions)."""
    from squeeze.targets.base import TargetOptions

    return get_target(target, TargetOptions(**{k: v for k, v in options.items() if v is not None}))


def build(
    path: str | Path,
    out: str | Path,
    *,
    target: str = "tensorrt",
    batch_size: int = 1,
    data: str | None = None,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    **remote: Any,
) -> dict[str, Any]:
    """Build a TensorRT engine for the target: OUT (the engine) + OUT.manifest.json, written atomically.

    jetson-* builds on the device over SSH (--device); tensorrt builds on this machine's GPU. When
    neither is possible the error says exactly what would run and why it cannot here.
    """
    from squeeze.passes.export import ExportConfig, export_onnx
    from squeeze.targets.tensorrt import manifest_path

    out = check_output_path(Path(out))
    tgt = remote_target(target, **remote)
    if not tgt.engine_suffixes:
        raise UserInputError(f"target {target} runs ONNX files directly with ONNX Runtime: there is no engine to build "
                             "(squeeze export writes the ONNX; build is for tensorrt and jetson-*)")
    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    with tempfile.TemporaryDirectory(prefix="squeeze-build-") as tmp:
        if isinstance(art, ModelArtifact):
            onnx_art = export_onnx(art, Path(tmp) / "model.onnx", ExportConfig(), open_data(data, art))
        else:
            onnx_art = art
        if not onnx_art.input_spec.dynamic_batch and batch_size != onnx_art.input_spec.shape[0]:
            raise UserInputError(f"{path} has a static batch of {onnx_art.input_spec.shape[0]}; cannot build for batch {batch_size}")
        engine = tgt.build(onnx_art, out, batch=batch_size)
    return {"engine": str(engine.path), "manifest": str(manifest_path(engine.path)), "bytes": engine.path.stat().st_size,
            **engine.manifest}


def parse_count(text: str | int | None, what: str) -> int | None:
    """'200k', '1.5M', '2G' or a bare integer."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise UserInputError(f"{what} must look like 200k, 1.5M or 300000, got {text!r}")
    return int(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()])


def search(
    teacher_path: str | Path,
    *,
    data: str | None = None,
    target: str = "cpu",
    out: str | Path = "search-out",
    latency_budget: str | float | None = None,
    params_budget: str | int | None = None,
    macs_budget: str | int | None = None,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    progress: Progress = silent,
    on_event: Callable[..., None] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Training-free student search for the teacher; writes OUT/student.json, result.json, history.jsonl."""
    from squeeze.passes.search import SearchConfig, search as run_search, write_outputs
    from squeeze.passes.search.spaces import get_space

    cfg = SearchConfig(latency_budget_ms=parse_duration_ms(latency_budget), params_budget=parse_count(params_budget, "--params-budget"),
                       macs_budget=parse_count(macs_budget, "--macs-budget"), **config)
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "result.json").exists())):
        raise UserInputError(f"{out} exists and is not a squeeze search directory; choose another --out")
    get_space(cfg.space)  # an unknown space fails here, before the teacher is loaded
    tgt = get_target(target)
    teacher = load_model(teacher_path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    bundle = open_data(data, teacher)
    outcome = run_search(teacher, bundle, tgt, cfg, progress=progress, on_event=on_event)
    outcome.result["versions"] = versions()
    with atomic_dir(out) as stage:
        write_outputs(outcome, stage)
    return {"out": str(out), **outcome.result}


def parse_latency_budget(text: str | float | None) -> tuple[float | None, float | None]:
    """'1ms' / '500us' -> (1.0, None) in ms; '0.5x' -> (None, 0.5), a fraction of the input model's measured latency."""
    if isinstance(text, str) and text.strip().lower().endswith("x"):
        try:
            ratio = float(text.strip()[:-1])
        except ValueError:
            raise UserInputError(f"relative latency budget must look like 0.5x, got {text!r}") from None
        return None, _positive_budget(ratio, text)
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
    if not tgt.available().available and not tgt.can_predict():
        raise TargetUnavailableError(f"target {target} cannot measure latency here and has no offline predictor: {tgt.available().reason}")
    with atomic_dir(out) as stage:
        result = run_prune(model, bundle, tgt, cfg, stage, teacher=teacher_art, progress=progress)
        result["model_file"] = str(out / MODEL_FILE)
        write_json_atomic(stage / "result.json", result)
    return {"out": str(out), **result, "versions": versions()}
