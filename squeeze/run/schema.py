"""The manifest's versioned schema, loaded strictly: what the gate reads is type-checked, and a
field of the wrong type, a non-finite or negative figure, or an unknown schema version is refused
with exit 2 naming the field path. A manifest is evidence a CI job acts on; a lenient reader
turned `"passed": "false"` into a pass.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from squeeze.errors import UserInputError

SCHEMA_VERSION = 1
HEX = set("0123456789abcdef")

Check = Callable[[Any], str | None]  # returns why the value is wrong, or None


def _number(minimum: float | None = 0.0, maximum: float | None = None, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__} {json.dumps(value)[:40]}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if minimum is not None and value < minimum:
            return f"must be >= {minimum:g}, got {value}"
        if maximum is not None and value > maximum:
            return f"must be <= {maximum:g}, got {value}"
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {type(value).__name__} {json.dumps(value)[:40]}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {type(value).__name__}"


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}, got {json.dumps(value)[:40]}"


def _sha256(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) == 64 and set(value) <= HEX else "must be a sha256 hex digest"


def _integer(minimum: int = 0) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        return None if value >= minimum else f"must be >= {minimum}, got {value}"

    return check


LATENCY = {"p50_ms": _number(0.0), "p90_ms": _number(0.0), "p99_ms": _number(0.0)}
LATENCY_OPTIONAL = {"measured": _boolean, "batch_size": _integer(1)}
# section -> (required fields, optional fields, may the whole section be null or absent)
SECTIONS: dict[str, tuple[dict[str, Check], dict[str, Check], bool]] = {
    "latency": (LATENCY, LATENCY_OPTIONAL, False),
    "teacher_latency": (LATENCY, LATENCY_OPTIONAL, True),
    "accuracy": ({}, {"teacher_accuracy": _number(0.0, 1.0, nullable=True), "output_accuracy": _number(0.0, 1.0, nullable=True)}, True),
    "parity": ({}, {"passed": _boolean, "max_abs_diff": _number(0.0, nullable=True), "tolerance_max_abs": _number(0.0, nullable=True)}, True),
    "fidelity": ({"output_nmse": _number(0.0)}, {"pixel_agreement": _number(0.0, 1.0), "pixel_accuracy": _number(0.0, 1.0)}, True),
    "gate": ({"verdict": _one_of("pass", "fail")}, {}, False),
    "target": ({"name": _text}, {}, False),
}


def _require_dict(value: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserInputError(f"{path}: {where} must be an object, got {type(value).__name__}")
    return value


def _check_fields(section: dict[str, Any], where: str, required: dict[str, Check], optional: dict[str, Check], path: Path) -> None:
    for name, check in {**required, **optional}.items():
        if name not in section:
            if name in required:
                raise UserInputError(f"{path}: {where}.{name} is missing")
            continue
        problem = check(section[name])
        if problem:
            raise UserInputError(f"{path}: {where}.{name} {problem}")


def validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """The manifest itself if it is a squeeze manifest of a schema this version reads; else exit 2 naming the field."""
    manifest = _require_dict(manifest, "the manifest", path)
    version = manifest.get("schema_version")
    if version is None:
        raise UserInputError(f"{path}: schema_version is missing (not a squeeze manifest, or written before squeeze recorded one: re-run compress)")
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserInputError(f"{path}: schema_version must be an integer, got {json.dumps(version)[:40]}")
    if version != SCHEMA_VERSION:
        newer = "a newer squeeze" if version > SCHEMA_VERSION else "an older squeeze"
        raise UserInputError(f"{path}: schema_version {version} is not {SCHEMA_VERSION}, the one this squeeze reads (written by {newer})")
    for name, (required, optional, nullable) in SECTIONS.items():
        if manifest.get(name) is None and nullable:
            continue
        if name not in manifest:
            raise UserInputError(f"{path}: {name} is missing")
        _check_fields(_require_dict(manifest[name], name, path), name, required, optional, path)
    checks = manifest["gate"].get("checks", [])
    if not isinstance(checks, list):
        raise UserInputError(f"{path}: gate.checks must be a list")
    for i, check in enumerate(checks):
        _check_fields(_require_dict(check, f"gate.checks[{i}]", path), f"gate.checks[{i}]", {"check": _text, "passed": _boolean}, {}, path)
    outputs = _require_dict(manifest.get("outputs"), "outputs", path)
    model = _require_dict(outputs.get("model.onnx"), "outputs.model.onnx", path)
    _check_fields(model, "outputs.model.onnx", {"sha256": _sha256, "bytes": _integer(1)}, {}, path)
    return manifest
