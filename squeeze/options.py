"""Helpers for typed configs, the single source of every pass's options: command-line spellings and
parsers for values written as text. A config field may carry `metadata` read by the CLI generator
(squeeze/cli/options.py): "help", "flags" (extra short flags), "names" (the option's spellings, where
an older one is kept), "parse" (text -> value), "cli": False (recipe only)."""

from __future__ import annotations

import re
from typing import Any

from squeeze.errors import UserInputError


def cli(*, flags: tuple[str, ...] = (), names: tuple[str, ...] | None = None, parse: Any = None, help: str | None = None,
        show: bool = True) -> dict[str, Any]:
    """The metadata dict of a config field (use as `field(default=..., metadata=cli(...))`)."""
    meta: dict[str, Any] = {}
    if flags:
        meta["flags"] = flags
    if names:
        meta["names"] = names
    if parse is not None:
        meta["parse"] = parse
    if help:
        meta["help"] = help
    if not show:
        meta["cli"] = False
    return meta


def parse_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """'stages.1=stages.1,stages.2=stages.2' -> (('stages.1', 'stages.1'), ('stages.2', 'stages.2'))."""
    pairs = [tuple(part.split("=", 1)) for part in text.split(",") if part.strip()]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise UserInputError(f"--feature-pairs must look like stages.1=stages.1,stages.2=stages.2, got {text!r}")
    return tuple(pairs)  # type: ignore[arg-type]


def parse_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


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


def parse_count(text: str | int | None, what: str) -> int | None:
    """'200k', '1.5M', '2G' or a bare integer."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise UserInputError(f"{what} must look like 200k, 1.5M or 300000, got {text!r}")
    return int(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()])


def parse_latency_budget(text: str | float | None) -> tuple[float | None, float | None]:
    """'1ms' / '500us' -> (1.0, None) in ms; '0.5x' -> (None, 0.5), a fraction of the input model's measured latency."""
    if isinstance(text, str) and text.strip().lower().endswith("x"):
        try:
            ratio = float(text.strip()[:-1])
        except ValueError:
            raise UserInputError(f"relative latency budget must look like 0.5x, got {text!r}") from None
        return None, _positive_budget(ratio, text)
    return parse_duration_ms(text), None
