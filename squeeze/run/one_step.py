"""One pass as a one-step recipe: `squeeze distill|prune|quantize|search` (and their API functions)
run through compress's runner, so they get the same pass cache, resume, provenance, manifest and
report. The pass's own files (student.pt, model.pt, result.json, ...) are also placed at the top of
the output directory, where these commands have always written them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from squeeze.errors import UserInputError
from squeeze.run.recipe import Recipe, RecipeStep, build_config, pass_class


def one_step_recipe(name: str, values: dict[str, Any]) -> Recipe:
    """A validated recipe of the single pass `name` with these config values (typed, checked)."""
    cls = pass_class(name)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"{name}: unknown option {unknown[0]!r}; {cls.Config.__name__} takes {', '.join(sorted(known))}")
    try:
        config = cls.Config(**values)  # driver-owned fields (device, nproc) are set here, not in a recipe file
    except TypeError as exc:
        raise UserInputError(f"{name} options: {exc}") from None
    build_config(cls.Config, {k: v for k, v in values.items() if k not in ("device", "nproc")}, f"{name} options")
    return Recipe([RecipeStep(name, config)], f"squeeze {name}")


def run_pass(name: str, model: str | Path, *, out: str | Path, values: dict[str, Any], teacher: str | Path | None = None,
             student: str | None = None, **compress_options: Any) -> dict[str, Any]:
    """Run pass `name` on `model` (for distill: the teacher; `student` is trained) through compress.

    Returns the pass's result (file paths pointing into `out`), with `out` and a `compress` summary
    of the run (verdict, speed-up, accuracy, manifest path)."""
    from squeeze.measure.latency import SPEEDUP_FIELDS
    from squeeze.run.compress import compress

    recipe = one_step_recipe(name, values)
    manifest = compress(model, out=out, recipe=recipe, student=student, teacher_path=teacher, expose_pass_outputs=True,
                        **compress_options)
    result = dict(manifest["pass_results"].get(name) or {})
    result = _point_into(result, manifest.get("exposed", {}))
    summary = {"verdict": manifest["gate"]["verdict"], **{k: manifest[k] for k in SPEEDUP_FIELDS if k in manifest},
               "accuracy": manifest["accuracy"], "latency": manifest["latency"], "teacher_latency": manifest["teacher_latency"],
               "manifest": str(Path(out) / "manifest.json"), "report": str(Path(out) / "report.html")}
    return {**result, "out": str(out), "compress": summary}


def _point_into(result: Any, exposed: dict[str, str]) -> Any:
    """Paths of the pass's files in its cache entry, replaced by their copies in the output directory."""
    if isinstance(result, dict):
        return {k: _point_into(v, exposed) for k, v in result.items()}
    if isinstance(result, list):
        return [_point_into(v, exposed) for v in result]
    if isinstance(result, str) and result in exposed:
        return exposed[result]
    return result
