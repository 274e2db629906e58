"""Python API. The CLI is a thin shell over these functions; each returns JSON-ready data."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.fsutil import check_output_path, sha256_file
from squeeze.options import parse_count, parse_duration_ms, parse_latency_budget  # noqa: F401 - the API's surface
from squeeze.targets import get_target, target_names
from squeeze.targets.base import ProfileSpec

# Re-exported from their rooms, imported on first use: `squeeze gate` and `squeeze targets` never import torch.
_LAZY = {
    "open_data": "squeeze.io.data", "check_data_fits": "squeeze.io.data", "load_data": "squeeze.io.data", "SplitConfig": "squeeze.io.data",
    "BUNDLED": "squeeze.io.data", "DataBundle": "squeeze.io.data", "versions": "squeeze.run.manifest",
    "load_any": "squeeze.io.modelio", "load_model": "squeeze.io.modelio",
    "ModelArtifact": "squeeze.io.artifacts", "OnnxArtifact": "squeeze.io.artifacts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "_initial_student":
        from squeeze.io.students import initial_student

        return initial_student
    raise AttributeError(f"module 'squeeze.api' has no attribute {name!r}")


Progress = Callable[[str], None]


def silent(message: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------


def inspect(path: str | Path, *, arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False,
            output: str | None = None) -> dict[str, Any]:
    """Input spec, parameters, MACs and a per-layer summary of a torch or ONNX model."""
    from squeeze.io.artifacts import OnnxArtifact
    from squeeze.io.modelio import load_any
    from squeeze.measure.analysis import count_macs, count_params, layer_summary, onnx_summary, op_histogram

    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
    if isinstance(art, OnnxArtifact):
        return {"path": str(path), "format": "onnx", "sha256": art.sha256, "input_spec": art.input_spec.to_dict(), **onnx_summary(art.path)}
    example = art.input_spec.example()
    layers = layer_summary(art.module, example) if art.format != "torchscript" else []  # no hooks on ScriptModules
    return {
        "path": str(path),
        "format": art.format,
        "sha256": art.sha256,
        "input_spec": art.input_spec.to_dict(),
        "output_shape": list(art.probe_output_shape()), "output": art.metadata.get("output"), "outputs": art.outputs,
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
    output: str | None = None,
) -> dict[str, Any]:
    """Export a torch model to ONNX with a parity check on real eval samples."""
    from squeeze.io.data import open_data
    from squeeze.io.modelio import load_model
    from squeeze.run.manifest import versions
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    cfg = ExportConfig(opset=opset, exporter=exporter, dynamic_batch=dynamic_batch)
    out = check_output_path(Path(out))
    art = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
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
    output: str | None = None,
    **remote: Any,
) -> dict[str, Any]:
    """Measure latency on a target. A torch model is exported (with parity) to a temporary ONNX first.

    Remote targets take `device` ("user@host[:port]"), `ssh` (SshOptions), `power_mode`,
    `remote_python`, `precision` (see remote_target). A target that cannot measure here but can
    predict (jetson-* without --device, tensorrt on a known GPU) returns a prediction, labelled
    `"measured": false` / `"label": "predicted"`. An engine file (.engine/.plan with a squeeze
    manifest) is measured as is on the target that built it, and refused elsewhere.
    """
    from squeeze.io.artifacts import ModelArtifact
    from squeeze.io.data import open_data
    from squeeze.io.modelio import load_any
    from squeeze.io.onnx_export import ExportConfig, export_onnx

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
    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
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


def run_pass(name: str, model: str | Path, *, out: str | Path, values: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """One pass as a one-step recipe through compress's runner (cache, resume, manifest, report): see squeeze/run/one_step.py."""
    from squeeze.run.one_step import run_pass as run_one

    remote = {k: options.pop(k) for k in REMOTE_KEYS if k in options}
    return run_one(name, model, out=out, values=values or {}, remote={k: v for k, v in remote.items() if v is not None}, **options)


REMOTE_KEYS = ("device", "identity_file", "known_hosts", "port", "connect_timeout_s", "power_mode", "remote_python", "precision", "trtexec")


def distill(teacher_path: str | Path, student: str, *, data: str | None = None, out: str | Path = "distill-out", target: str = "cpu",
            arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False, progress: Progress = silent,
            cache_dir: str | Path | None = None, resume: bool = True, **config: Any) -> dict[str, Any]:
    """Train a student (JSON spec or pkg.mod:factory) from the teacher: OUT/student.pt, OUT/result.json, plus the run's
    manifest and report. With nproc > 1 the training runs as DistributedDataParallel over that many local processes."""
    return run_pass("distill", teacher_path, out=out, values=config, student=student, data=data, target=target, arch=arch,
                    input_shape=input_shape, trust_pickle=trust_pickle, progress=progress, cache_dir=cache_dir, resume=resume)


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
    output: str | None = None,
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
                        command=command, remote={k: v for k, v in remote.items() if v is not None}, output=output)


def print_recipe(recipe: str | Path | None = None, *, student: bool = False, overrides: dict[str, dict[str, Any]] | None = None,
                 latency_budget: str | float | None = None) -> str:
    """The effective recipe `compress` would run, as YAML (validated, no work done). With a latency budget, the
    passes that aim at one show the figure they will aim at (a derived budget needs the teacher measured: not shown)."""
    from squeeze.options import parse_latency_budget
    from squeeze.run import budget as budgets
    from squeeze.run.compress import effective_recipe
    from squeeze.run.pipeline import Step
    from squeeze.run.recipe import Recipe, RecipeStep, pass_class

    plan = effective_recipe(recipe, student=student, overrides=overrides)
    budget_ms, ratio = parse_latency_budget(latency_budget)
    if ratio is not None:  # the figure the passes aim at needs the teacher measured
        return f"# --latency-budget {ratio:g}x: the passes aim at {ratio:g} of the teacher's p50, measured when compress starts\n" + plan.to_yaml()
    if budget_ms is None:
        return plan.to_yaml()
    steps = [Step(pass_class(s.name)(), s.config) for s in plan.passes]
    budgets.aim_passes(steps, budgets.derive(budget_ms, {}, steps))
    return Recipe([RecipeStep(s.name, step.config) for s, step in zip(plan.passes, steps)], plan.source).to_yaml()


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


def quantize(path: str | Path, *, teacher: str | Path | None = None, data: str | None = None, target: str = "cpu",
             out: str | Path = "quant", arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False,
             progress: Progress = silent, cache_dir: str | Path | None = None, resume: bool = True, output: str | None = None,
             **config: Any) -> dict[str, Any]:
    """INT8 quantization-aware distillation for a target: OUT/model.onnx (QDQ), OUT/float.onnx, OUT/result.json, plus the
    run's manifest and report. The teacher defaults to the float model itself. A killed run resumes."""
    return run_pass("quantize", path, out=out, values=config, teacher=teacher, data=data, target=target, arch=arch,
                    input_shape=input_shape, trust_pickle=trust_pickle, progress=progress, cache_dir=cache_dir, resume=resume, output=output)


# ----------------------------------------------------------------------------------------------
# TensorRT / Jetson / ssh:// (remote targets)

def _is_engine(path: Path) -> bool:
    from squeeze.targets.tensorrt import ENGINE_SUFFIXES

    return path.suffix.lower() in ENGINE_SUFFIXES and path.is_file()


def remote_target(target: str, **options: Any) -> Any:
    """The target configured from its command-line options (device, SSH, power mode, precision, ...); each
    target takes the options that apply to it and refuses the others (squeeze.targets.base.TargetOptions)."""
    from squeeze.targets.registry import target_from_options

    return target_from_options(target, **options)


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
    output: str | None = None,
    **remote: Any,
) -> dict[str, Any]:
    """Build a TensorRT engine for the target: OUT (the engine) + OUT.manifest.json, written atomically.

    jetson-* builds on the device over SSH (--device); tensorrt builds on this machine's GPU. When
    neither is possible the error says exactly what would run and why it cannot here.
    """
    from squeeze.io.artifacts import ModelArtifact
    from squeeze.io.data import open_data
    from squeeze.io.modelio import load_any
    from squeeze.io.onnx_export import ExportConfig, export_onnx
    from squeeze.targets.engine import manifest_path

    out = check_output_path(Path(out))
    tgt = remote_target(target, **remote)
    if not tgt.engine_suffixes:
        raise UserInputError(f"target {target} runs ONNX files directly with ONNX Runtime: there is no engine to build "
                             "(squeeze export writes the ONNX; build is for tensorrt and jetson-*)")
    art = load_any(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
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


def search(teacher_path: str | Path, *, data: str | None = None, target: str = "cpu", out: str | Path = "search-out",
           latency_budget: str | float | None = None, params_budget: str | int | None = None, macs_budget: str | int | None = None,
           arch: str | None = None, input_shape: str | None = None, trust_pickle: bool = False, progress: Progress = silent,
           cache_dir: str | Path | None = None, resume: bool = True, **config: Any) -> dict[str, Any]:
    """Training-free student search for the teacher: OUT/student.json, result.json, history.jsonl, plus the run's manifest."""
    values = {**config, "latency_budget_ms": parse_duration_ms(latency_budget), "params_budget": parse_count(params_budget, "--params-budget"),
              "macs_budget": parse_count(macs_budget, "--macs-budget")}
    return run_pass("search", teacher_path, out=out, values=values, data=data, target=target, arch=arch, input_shape=input_shape,
                    trust_pickle=trust_pickle, progress=progress, cache_dir=cache_dir, resume=resume)


def prune(path: str | Path, *, teacher: str | Path | None = None, data: str | None = None, target: str = "cpu",
          latency_budget: str | float | None = None, out: str | Path = "prune-out", arch: str | None = None, input_shape: str | None = None,
          trust_pickle: bool = False, progress: Progress = silent, cache_dir: str | Path | None = None, resume: bool = True,
          output: str | None = None, **config: Any) -> dict[str, Any]:
    """Structured pruning toward a latency budget measured on the target, recovered by (layer) distillation:
    OUT/model.pt (a squeeze checkpoint that records the pruned structure), OUT/result.json, plus the run's manifest.
    `result["budget_met"]` is False when the budget was not reached (the best model reached is still written)."""
    budget_ms, budget_ratio = parse_latency_budget(latency_budget)
    values = {**config, "latency_budget_ms": budget_ms, "latency_budget_ratio": budget_ratio}
    return run_pass("prune", path, out=out, values=values, teacher=teacher, data=data, target=target, arch=arch, input_shape=input_shape,
                    trust_pickle=trust_pickle, progress=progress, cache_dir=cache_dir, resume=resume, output=output)
