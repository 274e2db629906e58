"""What a run does with a model whose output is not class logits (a dense map, regression values): the
passes that need logits (search's proxies, distill's logit losses) are dropped from a built-in recipe
up front, and said so; prune and quantize recover it by output matching; every stage is compared to
the teacher's outputs (squeeze/measure/fidelity.py) instead of by class accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from squeeze.errors import UserInputError
from squeeze.run.recipe import BUILTIN_RECIPES, Recipe, pass_class, validate_order

KINDS = {"map": "a dense map", "values": "values, not class logits"}


def describe_output(model: Any, data: Any) -> str:
    """'N x 2x28x28 (a dense map)' / 'N x 4 (regression targets in the data)'."""
    shape = "x".join(map(str, model.probe_output_shape()))
    kind = model.output_kind(data)
    if kind == "values" and len(model.probe_output_shape()) == 1:
        return f"N x {shape} (the data holds regression targets for it)"
    return f"N x {shape}" + (f" ({KINDS[kind]})" if kind in KINDS else "")


def drop_logit_passes(plan: Recipe, recipe: Any, model: Any, data: Any, *, student: bool, overrides: dict[str, dict[str, Any]],
                      progress: Callable[[str], None], source: str) -> tuple[Recipe, list[dict[str, str]]]:
    """A built-in recipe without the passes that need class logits, when the model has none; (plan, dropped passes
    with why). A recipe the user wrote is left as it is: check_plan refuses such a pass there, naming it."""
    if model.output_kind(data) == "logits" or not (recipe is None or (isinstance(recipe, str) and recipe in BUILTIN_RECIPES)):
        return plan, []
    needing = [s.name for s in plan.passes if pass_class(s.name).requires.logits]
    if not needing:
        return plan, []
    output = describe_output(model, data)
    if student:
        raise UserInputError(f"--student: distilling a student needs class logits, and {source} outputs {output}; compress the model "
                             "itself (prune and quantize recover it by output matching)")
    given = [n for n in needing if overrides.get(n)]
    if given:
        raise UserInputError(f"options for {given[0]!r} were given, but {source} outputs {output}, not class logits: the built-in "
                             f"recipe drops {given[0]!r} for such models")
    why = (f"needs class logits (N, classes); {source} outputs {output}: prune and quantize recover it by output matching "
           "(normalised MSE to the teacher's outputs) instead")
    dropped = [{"pass": name, "why": why} for name in needing]
    kept = Recipe([s for s in plan.passes if s.name not in needing], f"{plan.source}, without {', '.join(needing)}")
    validate_order(kept)
    progress(f"{source} outputs {output}: dropping {', '.join(needing)} from the recipe (they need class logits); "
             f"{', '.join(kept.names())} recover it by output matching")
    announce = getattr(progress, "pass_dropped", None)
    for name in needing:
        if announce is not None:
            announce(name, "needs class logits")
    return kept, dropped


def check_accuracy_gate(max_accuracy_drop: float | None, model: Any, data: Any, source: str) -> None:
    """--max-accuracy-drop gates class accuracy, or pixel accuracy for a class map with per-pixel labels."""
    if max_accuracy_drop is None:
        return
    kind = model.output_kind(data)
    if kind == "logits":
        if data is None or not data.has_labels:
            raise UserInputError("--max-accuracy-drop needs a classifier and a labelled dataset (--data)")
        return
    if kind == "map" and data is not None and data.targets == "pixel":
        return
    raise UserInputError(f"--max-accuracy-drop gates class accuracy (or pixel accuracy, with per-pixel labels); {source} outputs "
                         f"{describe_output(model, data)}, which has no accuracy to gate on: the manifest reports its output_nmse "
                         "against the teacher instead")


def output_record(model: Any, data: Any) -> dict[str, Any]:
    """The manifest's record of what the compressed model outputs (and, for a multi-output model, what it was picked from)."""
    return {"kind": model.output_kind(data), "shape": list(model.probe_output_shape()), "selected": model.metadata.get("output"),
            "of": [{"name": n, "shape": s} for n, s in model.outputs] if model.outputs else None,
            "onnx_name": "logits"}  # the exporters' name for the one output, whatever it holds


def accuracy_of(meter: Any, final: dict[str, Any]) -> dict[str, Any] | None:
    """For a class map with per-pixel labels: pixel accuracy where a classifier's accuracy stands (the gate reads it)."""
    teacher = meter.reference.teacher_scores
    if "pixel_accuracy" not in final:
        return None
    return {"split": "eval", "samples": final["samples"], "metric": "pixel accuracy", "teacher_accuracy": teacher["pixel_accuracy"],
            "output_accuracy": final["pixel_accuracy"], "top1_agreement": final.get("pixel_agreement")}


def distillation(results: dict[str, Any]) -> dict[str, Any] | None:
    """Each training pass's objective and its loss terms (prune recovery, QAT), for the manifest."""
    out = {name: r["distillation"] for name, r in results.items() if isinstance(r, dict) and isinstance(r.get("distillation"), dict)}
    return out or None
