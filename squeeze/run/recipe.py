"""Recipes: the pass list of `squeeze compress` and each pass's typed config, as YAML.

    version: 1
    passes:
      - distill: {epochs: 8, loss: kd}
      - export: {opset: 18}
      - profile: {spec: {iterations: 200}}

The whole recipe is validated before any work: unknown passes or keys, wrong types, values a
config refuses, and pass orders whose artifacts do not connect are exit-2 errors naming the key
path (`passes[1].distill.epochs`), never a failure an hour into a run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeeze.errors import UserInputError
from squeeze.passes.registry import pass_class, pass_names  # noqa: F401 - pass_class is part of this module's interface

RECIPE_VERSION = 1

# Config fields the driver owns (set from the command line / context), not the recipe.
DRIVER_FIELDS = {"device", "nproc"}

# Recipes `--recipe NAME` selects without a file. With --student, `search` is dropped from them.
BUILTIN_RECIPES: dict[str, dict[str, Any]] = {
    # the default: the whole chain (about 15-25 minutes for the MNIST sample teachers on 2 cores)
    "full": {"version": 1, "passes": [
        {"search": {"population": 24, "iterations": 96}},
        {"distill": {"epochs": 15, "min_steps": 800}},
        {"prune": {"steps": 3, "candidates": 3, "recover_epochs": 1.0, "final_epochs": 3.0}},
        {"quantize": {"epochs": 2, "fallback_to_float": True}},
        {"profile": {"spec": {"iterations": 300}}},
    ]},
    # the whole chain at small settings (a few minutes): what `make sample` runs
    "quick": {"version": 1, "passes": [
        # a student born at the budget, distilled longer: 3 epochs, then pruning a 2x student with short recovery,
        # left the sample 1.6-1.9 pt below its teacher at 3.6-3.8x (issue 20); prune then only checks the budget
        {"search": {"population": 12, "iterations": 24, "profile_iterations": 30, "headroom_before_prune": 1.0}},
        {"distill": {"epochs": 15, "min_steps": 800}},
        {"prune": {"steps": 2, "candidates": 2, "recover_epochs": 0.5, "final_epochs": 1.5, "profile_rounds": 3,
                   "profile_iterations": 60, "final_rounds": 3}},
        {"quantize": {"epochs": 1, "train_samples": 2048, "fallback_to_float": True}},
        {"profile": {"spec": {"iterations": 200}}},
    ]},
    # distil the given --student, then export and profile (no pruning or quantization)
    "distill": {"version": 1, "passes": [{"distill": {"epochs": 8}}, "export", "profile"]},
    # no compression: export the model with a parity check and profile it (a baseline)
    "export": {"version": 1, "passes": ["export", "profile"]},
}


@dataclass
class RecipeStep:
    name: str
    config: Any  # the pass's Config dataclass instance


@dataclass
class Recipe:
    passes: list[RecipeStep] = field(default_factory=list)
    source: str = "default"

    def names(self) -> list[str]:
        return [s.name for s in self.passes]

    def step(self, name: str) -> RecipeStep | None:
        return next((s for s in self.passes if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"version": RECIPE_VERSION, "passes": [{s.name: config_to_dict(s.config)} for s in self.passes]}

    def to_yaml(self) -> str:
        import yaml

        header = f"# squeeze recipe (effective; from {self.source})\n"
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in DRIVER_FIELDS:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` from YAML as type `tp`, or an error naming `path`. Only lossless conversions."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except UserInputError as exc:
                errors.append(str(exc))
        raise UserInputError(errors[0] if len(errors) == 1 else f"{path}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserInputError(f"{path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_config(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .nan and .inf as floats
            raise UserInputError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise UserInputError(f"{path}: expected a path, got {value!r}")
        return Path(value)
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserInputError(f"{path}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserInputError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def build_config(cls: type, values: dict[str, Any], path: str) -> Any:
    """A config dataclass from a mapping: unknown keys and wrong types are errors naming the key path."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in DRIVER_FIELDS]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise UserInputError(f"{path}.{key}: unknown key; {cls.__name__} takes {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{path}: {exc}") from None


def parse_recipe(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a recipe is a mapping with 'version' and 'passes'")
    unknown = set(data) - {"version", "passes"}
    if unknown:
        raise UserInputError(f"{source}: {sorted(unknown)[0]}: unknown key; a recipe has 'version' and 'passes'")
    if data.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise UserInputError(f"{source}: version: this squeeze reads recipe version {RECIPE_VERSION}, got {data.get('version')!r}")
    entries = data.get("passes")
    if not isinstance(entries, list) or not entries:
        raise UserInputError(f"{source}: passes: expected a non-empty list of passes")
    named: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        where = f"passes[{i}]"
        if isinstance(entry, str):
            name, values = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, values = next(iter(entry.items()))
            values = {} if values is None else values
        else:
            raise UserInputError(f"{source}: {where}: expected a pass name or a one-key mapping like {{distill: {{epochs: 8}}}}")
        if not isinstance(name, str) or name not in pass_names():
            raise UserInputError(f"{source}: {where}: unknown pass {name!r}; known passes: {', '.join(pass_names())}")
        if not isinstance(values, dict):
            raise UserInputError(f"{source}: {where}.{name}: expected a mapping of config keys, got {values!r}")
        named.append((name, values))
    validate_names([name for name, _ in named], source)
    steps = []
    for i, (name, values) in enumerate(named):
        where = f"passes[{i}]"
        cls = pass_class(name)
        try:
            config = build_config(cls.Config, values, f"{where}.{name}")
        except UserInputError as exc:
            raise UserInputError(f"{source}: {exc}") from None
        steps.append(RecipeStep(name, config))
    recipe = Recipe(steps, source)
    validate_order(recipe)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserInputError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"recipe {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_recipe(data, str(path))


def validate_names(names: list[str], source: str) -> None:
    """Order rules from the passes' own placement declarations (squeeze.passes.base.Placement)."""
    for name in set(names):
        if names.count(name) > 1:
            raise UserInputError(f"{source}: passes: {name!r} appears {names.count(name)} times; each pass runs once")
    for i, name in enumerate(names):
        placement = pass_class(name).placement
        if placement.first and i != 0:
            raise UserInputError(f"{source}: passes: {name!r} must come first ({placement.why})")
        for other in placement.before:
            if other in names and names.index(other) < i:
                raise UserInputError(f"{source}: passes: {name!r} must come before {other!r}: {placement.why}")


def validate_order(recipe: Recipe) -> None:
    """Orders whose artifacts connect, and the ones that would break mid-run, refused up front (once, when
    the recipe is made: a Recipe that exists is a valid one)."""
    from squeeze.io.artifacts import ModelArtifact, OnnxArtifact

    validate_names(recipe.names(), recipe.source)
    current: type = ModelArtifact
    for i, step in enumerate(recipe.passes):
        cls = pass_class(step.name)
        if not issubclass(current, cls.input_kind):
            if cls.input_kind is OnnxArtifact:
                makers = [n for n in pass_names() if pass_class(n).output_kind is OnnxArtifact and pass_class(n).input_kind is ModelArtifact]
                raise UserInputError(f"{recipe.source}: passes: {step.name!r} needs an ONNX model: add a pass that makes one "
                                     f"({' or '.join(makers)}) before it")
            raise UserInputError(f"{recipe.source}: passes[{i}].{step.name}: takes a {cls.input_kind.__name__} but the pass before "
                                 f"gives a {current.__name__}; fix the order")
        current = cls.output_kind
