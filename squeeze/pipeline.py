"""Pipeline runner: validates the whole pass chain before any work, then runs it in order.

Caching/resume of pass outputs (runs/<name>/<pass>-<hash>/) arrives with `squeeze compress`'s
recipe issue; today every pass runs each time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from squeeze.errors import UserInputError
from squeeze.passes.base import Context, Pass


@dataclass
class Step:
    pass_: Pass
    config: Any


def validate(steps: list[Step], first_input: type) -> None:
    """Refuse a chain whose artifact types do not connect, before any pass starts."""
    current = first_input
    for step in steps:
        kind = step.pass_.input_kind
        if not issubclass(current, kind):
            raise UserInputError(f"pass {step.pass_.name!r} takes a {kind.__name__} but receives a {current.__name__}; fix the pass order")
        if not isinstance(step.config, step.pass_.Config):
            raise UserInputError(f"pass {step.pass_.name!r} needs a {step.pass_.Config.__name__} config")
        current = step.pass_.output_kind


def run(steps: list[Step], ctx: Context, artifact: Any) -> tuple[Any, list[dict[str, Any]]]:
    validate(steps, type(artifact))
    records = []
    for step in steps:
        start = time.perf_counter()
        artifact = step.pass_.run(ctx, artifact, step.config)
        records.append({
            "name": step.pass_.name,
            "config": _plain(step.config),
            "seconds": round(time.perf_counter() - start, 3),
        })
    return artifact, records


def _plain(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
