"""`squeeze compress`: the whole pass pipeline for one target, driven by a recipe.

teacher ──[search]──▶ student ──[distill]──▶ ──[prune]──▶ ──[quantize]──▶ ──export──▶ ONNX ──build──▶ ──profile──▶

Every stage that produces a model is measured the same way (accuracy and teacher agreement on the
eval split, params, MACs, size, latency on the target), so the manifest reads as a table of how
each pass moved the model. Pass outputs are cached by content (squeeze.run.pipeline), so a re-run
skips finished passes and a killed run resumes where it stopped. The output directory is staged
and swapped in only when complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.artifacts import ModelArtifact, OnnxArtifact
from squeeze.run import budget as budgets
from squeeze.run.recipe import Recipe, RecipeStep, build_config, load_recipe, parse_recipe, pass_class, validate_order
from squeeze.targets.base import ProfileSpec

Progress = Callable[[str], None]


def builtin_recipe(name: str, *, student: bool) -> Recipe:
    """A built-in recipe (squeeze.run.recipe.BUILTIN_RECIPES); with a given student there is nothing to search."""
    from squeeze.run.recipe import BUILTIN_RECIPES

    data = BUILTIN_RECIPES[name]
    if student:
        data = {**data, "passes": [p for p in data["passes"] if not (isinstance(p, dict) and "search" in p) and p != "search"]}
    return parse_recipe(data, f"built-in recipe {name!r}")


def apply_overrides(recipe: Recipe, overrides: dict[str, dict[str, Any]]) -> Recipe:
    """Command-line values on top of the recipe's, through the same typed validation as the file."""
    from squeeze.run.recipe import config_to_dict

    unknown = sorted(name for name, values in overrides.items() if values and recipe.step(name) is None)
    if unknown:
        raise UserInputError(f"options for {unknown[0]!r} were given, but the recipe has no {unknown[0]!r} pass")
    steps = []
    for step in recipe.passes:
        values = overrides.get(step.name) or {}
        if values:
            merged = {**config_to_dict(step.config), **values}
            step = RecipeStep(step.name, build_config(type(step.config), merged, f"{step.name} options"))
        steps.append(step)
    out = Recipe(steps, recipe.source)
    validate_order(out)
    return out


def effective_recipe(recipe: str | Path | Recipe | None, *, student: bool, overrides: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """The recipe compress runs: a Recipe, a built-in name (full, quick, distill, export; default full), or a YAML file."""
    from squeeze.run.recipe import BUILTIN_RECIPES

    if isinstance(recipe, Recipe):
        base = recipe
    elif recipe is None or str(recipe) in BUILTIN_RECIPES:
        base = builtin_recipe(str(recipe or "full"), student=student)
    elif not Path(recipe).exists() and not str(recipe).endswith((".yaml", ".yml")) and "/" not in str(recipe):
        raise UserInputError(f"unknown recipe {str(recipe)!r}: the built-in recipes are {', '.join(BUILTIN_RECIPES)}; "
                             "or give a recipe file (.yaml)")
    else:
        base = load_recipe(recipe)
    return apply_overrides(base, overrides or {})


def _check_out(out: Path) -> None:
    if not out.resolve().parent.is_dir():
        raise UserInputError(f"output directory's parent does not exist: {out.resolve().parent}")
    if not os.access(out.resolve().parent, os.W_OK):
        raise UserInputError(f"cannot write {out}: {out.resolve().parent} is not writable (read-only file system or no permission)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise UserInputError(f"{out} exists and is not a squeeze output directory; choose another --out")


@dataclass
class Prepared:
    """A run with everything checkable checked: what `compress` then does inside the staged output."""

    plan: Recipe
    steps: list[Any]  # pipeline.Step
    target: Any
    availability: Any
    out: Path
    teacher: ModelArtifact
    bundle: Any
    first: ModelArtifact  # the teacher, or the given --student
    ctx: Any  # passes.base.Context (run_dir set per run)
    cache: Any
    spec: ProfileSpec
    budget_ms: float | None
    max_accuracy_drop: float | None
    command: list[str] | None
    expose: bool = False  # a one-step run: the pass's own files also go to the top of the output
    dropped: list[dict[str, str]] | None = None  # passes a built-in recipe dropped up front (they need class logits), with why
    budget_ratio: float | None = None  # --latency-budget 0.125x: p90 at most this fraction of the teacher's, timed in the same rounds


def prepare(path: str | Path, *, target: str, out: str | Path, data: str | None, arch: str | None, input_shape: str | None,
            trust_pickle: bool, latency_budget: str | float | None, max_accuracy_drop: float | None, profile_spec: ProfileSpec | None,
            student: str | None, recipe: str | Path | Recipe | None, overrides: dict[str, dict[str, Any]] | None, seed: int,
            resume: bool, cache_dir: str | Path | None, progress: Progress, command: list[str] | None,
            remote: dict[str, Any] | None, teacher_path: str | Path | None = None, expose: bool = False, output: str | None = None) -> Prepared:
    """Recipe, target, output, cache, teacher, data and every pass's declared needs, before any work."""
    from squeeze.io.data import check_data_fits, open_data
    from squeeze.options import parse_latency_budget
    from squeeze.targets.registry import target_from_options
    from squeeze.io.modelio import load_model
    from squeeze.passes.base import Context
    from squeeze.run import outputs, pipeline

    budget_ms, budget_ratio = parse_latency_budget(latency_budget)
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise UserInputError("--max-accuracy-drop must be >= 0 (percentage points)")
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    given = {k: dict(v) for k, v in overrides.items()}  # the user's, before the driver adds its own
    plan = effective_recipe(recipe, student=student is not None)
    if profile_spec is not None and plan.step("profile") is not None:
        overrides.setdefault("profile", {})["spec"] = dataclasses.asdict(profile_spec)
    if profile_spec is not None and profile_spec.threads is not None:
        _pin_threads(plan, overrides, profile_spec.threads)
    plan = apply_overrides(plan, overrides)
    tgt = target_from_options(target, **(remote or {}))
    availability = tgt.available()
    if not availability.available and not tgt.can_predict():
        raise TargetUnavailableError(f"target {target} can neither measure nor predict here: {availability.reason}")
    out = Path(out)
    _check_out(out)
    cache = pipeline.PassCache(Path(cache_dir) if cache_dir else pipeline.default_cache_dir(), resume=resume)
    _check_cache(cache.root)
    steps = [pipeline.Step(pass_class(s.name)(), s.config) for s in plan.passes]
    for step in steps:  # config-only checks (an unknown search space, ...) before the teacher is loaded
        step.pass_.check(step.config, Context(run_dir=out, target=tgt))
    if availability.available:
        progress(f"checking that {target} is reachable")
        tgt.preflight()
    progress("loading model and data")
    model = load_model(path, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
    teacher = load_model(teacher_path, trust_pickle=trust_pickle, output=output) if teacher_path is not None else model
    bundle = open_data(data, model)
    if bundle is not None and teacher is not model:
        check_data_fits(bundle, teacher)
    outputs.check_accuracy_gate(max_accuracy_drop, teacher, bundle, str(path))
    plan, dropped = outputs.drop_logit_passes(plan, recipe, model, bundle, student=student is not None, overrides=given, progress=progress,
                                              source=str(path))
    steps = [s for s in steps if s.pass_.name in plan.names()]
    first = _first_artifact(teacher, student, plan, bundle, seed) if student is not None else model
    ctx = Context(run_dir=out, target=tgt, data=bundle, teacher=teacher, progress=progress)
    facts = pipeline.RunFacts(has_data=bundle is not None, has_labels=bool(bundle and bundle.has_labels),
                              logits=model.output_kind(bundle) == "logits", student_given=student is not None, model=str(path),
                              output=outputs.describe_output(model, bundle).removeprefix("N x "))
    pipeline.check_plan(steps, facts, ctx, first)
    profile_step = plan.step("profile")
    spec = profile_step.config.spec if profile_step is not None else (profile_spec or ProfileSpec())
    return Prepared(plan, steps, tgt, availability, out, teacher, bundle, first, ctx, cache, spec, budget_ms, max_accuracy_drop, command,
                    expose, dropped, budget_ratio)


THREAD_FIELDS = ("profile_threads", "threads")  # the pass-config fields that pick a latency measurement's thread count


def _pin_threads(plan: Recipe, overrides: dict[str, dict[str, Any]], threads: int) -> None:
    """--threads N pins every pass's latency measurements (search, prune, the quantize guard) as well as the
    closing rounds: they all aim at the latency at N threads instead of each model's fastest thread count."""
    for step in plan.passes:
        names = {f.name for f in dataclasses.fields(step.config)}
        for field_name in THREAD_FIELDS:
            if field_name in names and getattr(step.config, field_name) is None:
                overrides.setdefault(step.name, {}).setdefault(field_name, threads)


def _check_cache(root: Path) -> None:
    """The pass cache must be writable before any work (its entries are where training resumes from)."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserInputError(f"cannot write the pass cache {root}: {probe} is not writable; set SQUEEZE_CACHE_DIR or --cache-dir")


def _first_artifact(teacher: ModelArtifact, student: str | None, plan: Recipe, bundle: Any, seed: int) -> ModelArtifact:
    """What the first pass receives: the teacher, or the --student freshly initialised (checked against the teacher)."""
    if student is None:
        return teacher
    from squeeze.io.students import initial_student as _initial_student
    from squeeze.passes.distill.pass_ import check_inputs

    distill_step = plan.step("distill")
    module, student_arch, student_kwargs = _initial_student(student, teacher, distill_step.config.seed if distill_step else seed)
    if distill_step is not None and bundle is not None:
        check_inputs(teacher, module, bundle)
    return ModelArtifact(module, teacher.input_spec, student, "student-spec", "", {"arch": student_arch, "arch_kwargs": student_kwargs})


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
    recipe: str | Path | Recipe | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    resume: bool = True,
    cache_dir: str | Path | None = None,
    progress: Progress = lambda m: None,
    command: list[str] | None = None,
    remote: dict[str, Any] | None = None,
    teacher_path: str | Path | None = None,
    expose_pass_outputs: bool = False,
    output: str | None = None,
) -> dict[str, Any]:
    """Run the recipe's passes for a target; write model.onnx, teacher.onnx, manifest.json, report.{html,md}.

    Everything is validated before any work (recipe, target, data, output path, every pass's needs);
    the output directory appears only when complete.
    """
    from squeeze.io.fsutil import atomic_dir

    run = prepare(path, target=target, out=out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                  latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop, profile_spec=profile_spec, student=student,
                  recipe=recipe, overrides=overrides, seed=seed, resume=resume, cache_dir=cache_dir, progress=progress,
                  command=command, remote=remote, teacher_path=teacher_path, expose=expose_pass_outputs, output=output)
    with atomic_dir(run.out) as stage:
        manifest, exposed = execute(run, stage, progress)
    return {"out": str(run.out), **manifest, "exposed": {src: str(run.out / rel) for src, rel in exposed.items()}}


def execute(run: Prepared, stage: Path, progress: Progress) -> tuple[dict[str, Any], dict[str, str]]:
    """The passes, the stage measurements, the output files, the manifest and the reports, into `stage`."""
    from squeeze.io.fsutil import write_json_atomic
    from squeeze.run import closing, pipeline
    from squeeze.run import manifest as manifests
    from squeeze.run.report import write_reports
    from squeeze.run.stages import StageMeter, copy_checkpoints, teacher_stage

    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    meter = StageMeter(run.target, run.spec, run.bundle, run.teacher, progress)
    teacher_row, teacher_latency = teacher_stage(meter, run.teacher, run.bundle, run.target, run.spec, run.cache, stage,
                                                 budgets.needs_teacher_latency(run.budget_ms, run.steps, run.budget_ratio))
    budget = budgets.derive(run.budget_ms, teacher_latency, run.steps, run.budget_ratio)
    if budget.get("noisy"):
        progress("WARNING: the teacher's latency was measured on a noisy host (" + "; ".join(budget.get("why_noisy", [])) + "): " +
                 ("the passes' aim may be loose (the gate compares with the teacher in the same closing rounds)" if budget.get("ratio")
                  else "the derived budget may be loose; give --latency-budget to fix it"))
    budgets.aim_passes(run.steps, budget)
    ctx = dataclasses.replace(run.ctx, run_dir=stage)
    ctx.results["budget"] = {**budget, "teacher_latency": teacher_latency}
    final, records = pipeline.run(run.steps, ctx, run.first, run.cache)
    stage_passes = {s.pass_.name for s in run.steps if s.pass_.produces_stage}
    stages = [teacher_row, *_pass_stages(records, ctx, meter, stage_passes)]
    final_art, engine, seconds = _output_model(run, final, records, stage, progress)
    stages.append({**meter.onnx("final", final_art), "seconds": seconds})
    comparison = meter.measure_latencies(stages)
    precision = closing.precision_decision(stages, run.steps, ctx.results, comparison, meter.onnx_files)
    if precision is not None:
        progress(f"precision: {precision['shipped']} ships: {precision['why']}")
        if precision["shipped"] == precision["float"]:
            final_art, engine = closing.ship_float(precision, stages, meter, run, stage)
    deploy = closing.write_session_file(run.target, run.spec, stages[-1]["latency"], stage)
    accuracy = _accuracy(meter)
    outcome = manifests.Outcome(stages, records, ctx.results, final_art, engine, accuracy, comparison,
                                _layer_latency(run, meter, final_art, stages, progress), budget,
                                manifests.gate_verdict(stages[-1]["latency"], accuracy, final_art.parity or {}, run.budget_ms,
                                                       run.max_accuracy_drop, run.budget_ratio, teacher_row["latency"]), precision, deploy, _fidelity(meter))
    copy_checkpoints(records, ctx.artifacts, stage_passes, stage)
    exposed = _expose(records, stage) if run.expose else {}
    manifest = manifests.build(run, outcome, stage, started, time.perf_counter() - t0)
    write_json_atomic(stage / "manifest.json", manifest)
    progress("writing report.html and report.md")
    write_reports(manifest, stage)
    return manifest, exposed


def _expose(records: list[dict[str, Any]], stage: Path) -> dict[str, str]:
    """A one-step run's pass files (student.pt, result.json, ...) at the top of the output; {cache path: output name}.
    compress's own files (model.onnx, manifest.json, ...) are never overwritten."""
    from squeeze.io.fsutil import copy_atomic

    exposed: dict[str, str] = {}
    for record in records:
        run_dir = Path(record.get("cache_entry", "")) / record["name"]
        if not run_dir.is_dir():
            continue
        for src in sorted(p for p in run_dir.iterdir() if p.is_file() and "resume-state" not in p.name):
            dest = stage / src.name
            if not dest.exists():
                copy_atomic(src, dest)
            exposed[str(src)] = src.name
    return exposed


def _pass_stages(records: list[dict[str, Any]], ctx: Any, meter: Any, stage_passes: set[str]) -> list[dict[str, Any]]:
    from squeeze.run.stages import stage_row

    rows = []
    for record in records:
        name = record["name"]
        if name in stage_passes and isinstance(ctx.results.get(name), dict):
            row = stage_row(name, record, ctx.artifacts[name], meter, ctx.results.get(name))
            rows.append({**row, "config": record["config"], "seconds": record["seconds"], "cached": record.get("cached", False)})
    return rows


def _output_model(run: Prepared, final: Any, records: list[dict[str, Any]], stage: Path, progress: Progress) -> tuple[OnnxArtifact, Any, float]:
    """model.onnx in the output (exported with parity when the recipe has no export), and the target's engine if it builds one."""
    from squeeze.io.fsutil import copy_atomic
    from squeeze.io.onnx_export import ExportConfig, export_onnx
    from squeeze.targets.base import EngineArtifact

    if not isinstance(final, OnnxArtifact):
        progress("exporting the final model")
        final = export_onnx(final, stage / "model.onnx", ExportConfig(), run.bundle)
    onnx_path = stage / "model.onnx"
    if final.path.resolve() != onnx_path.resolve():
        copy_atomic(final.path, onnx_path)
    final_art = dataclasses.replace(final, path=onnx_path)
    # runtimes that take the ONNX check they accept it; TensorRT targets build an engine (+ its manifest) on the device
    built = run.target.build(final_art, stage / "model.engine") if run.availability.available else final_art
    engine = built if isinstance(built, EngineArtifact) else None
    seconds = sum(r["seconds"] for r in records if r["name"] in ("export", "profile"))
    return final_art, engine, seconds


def _accuracy(meter: Any) -> dict[str, Any] | None:
    """Teacher in torch vs the deployed ONNX in ONNX Runtime, both on the whole eval split (pixel accuracy for a class map)."""
    from squeeze.measure.accuracy import compare
    from squeeze.run.outputs import accuracy_of

    if meter.reference is not None:
        return accuracy_of(meter, meter.fidelity["final"])
    if meter.loader is None:
        return None
    return compare((meter.teacher_preds, meter.labels), (meter.predictions["final"], meter.labels), "eval")


def _fidelity(meter: Any) -> dict[str, Any] | None:
    """The deployed ONNX's outputs against the teacher's on the eval split, for a model that is not a classifier."""
    from squeeze.measure.fidelity import summary

    return summary(meter.reference, meter.fidelity["final"], "eval") if meter.reference is not None else None


def _layer_latency(run: Prepared, meter: Any, final_art: OnnxArtifact, stages: list[dict[str, Any]],
                   progress: Progress) -> dict[str, Any] | None:
    """Per-layer times of the output and of the teacher, each at the runtime settings it was measured at."""
    from squeeze.run.closing import chosen_spec

    if not run.availability.available:
        return None
    final = run.target.layer_profile(final_art, chosen_spec(run.spec, stages[-1]["latency"]))
    if final is None:
        return None
    progress("per-layer latency of the output and the teacher")
    return {"final": final, "teacher": run.target.layer_profile(meter.onnx_files["teacher"], chosen_spec(run.spec, stages[0]["latency"]))}
