"""compress's closing decisions, taken on the closing rounds' own measurement (the one the gate reads):
whether a lower-precision stage (INT8) ships or the float stage it came from, and the runtime settings
the shipped model was measured at, written next to it as the deploy file its runtime loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.io.fsutil import copy_atomic, write_json_atomic
from squeeze.measure.latency import SPEEDUP_FIELDS
from squeeze.targets.base import EngineArtifact, OnnxArtifact, ProfileSpec

GATED = "p90"  # the statistic the gate checks (latency_p90_ms)
SESSION_FILE = "model.session.json"


def _lowered_pair(stages: list[dict[str, Any]], steps: list[Any], results: dict[str, Any]) -> tuple[str, str] | None:
    """(lower-precision stage, the float stage it lowered) when the output came from a pass that lowers precision."""
    stage_names = [s["stage"] for s in stages]
    producing = [s.pass_ for s in steps if s.pass_.produces_stage and s.pass_.name in stage_names]
    if not producing or not getattr(producing[-1], "lowers_precision", False):
        return None
    lowered = producing[-1].name
    if (results.get(lowered) or {}).get("shipped", "int8") != "int8":
        return None  # the pass already kept its float input
    index = stage_names.index(lowered)
    return lowered, stage_names[index - 1]  # stages[0] is the teacher: a one-step quantize lowered the teacher itself


def precision_decision(stages: list[dict[str, Any]], steps: list[Any], results: dict[str, Any], comparison: Any,
                       onnx_files: dict[str, OnnxArtifact]) -> dict[str, Any] | None:
    """INT8 ships only when the closing rounds measured it faster at the gated statistic (the median over rounds
    of its per-round p90 divided by the float stage's, paired round by round) than the float stage it came from."""
    pair = _lowered_pair(stages, steps, results)
    if pair is None:
        return None
    low, high = pair
    rows = {s["stage"]: s for s in stages}
    figures = {name: {k: rows[name]["latency"].get(k) for k in ("p50_ms", "p90_ms", "p99_ms")} for name in pair}
    key_low, key_high = onnx_files[low].sha256, onnx_files[high].sha256
    gated = comparison.per_round_by_statistic.get(GATED) if comparison.kind == "measured" else None
    if gated and key_low in gated and key_high in gated:
        r = np.asarray(gated[key_low]) / np.asarray(gated[key_high])
        ratio, how = float(np.median(r)), f"median of {len(r)} paired per-round {GATED} ratios in the closing rounds"
    else:
        ratio = figures[low]["p90_ms"] / figures[high]["p90_ms"]
        how = f"{GATED} {'prediction' if comparison.kind != 'measured' else 'figures'} of both"
    ship_low = ratio < 1.0
    why = (f"{low} is {'faster' if ship_low else 'not faster'} than its float input '{high}' at {GATED} "
           f"(ratio {ratio:.3f}, {how})")
    return {"statistic": f"{GATED}_ms", "candidates": {f"{low} (lower precision)": figures[low], f"{high} (float)": figures[high]},
            "ratio": ratio, "shipped": low if ship_low else high, "lowered": low, "float": high, "why": why}


def ship_float(decision: dict[str, Any], stages: list[dict[str, Any]], meter: Any, run: Any, stage: Path) -> tuple[OnnxArtifact, Any]:
    """Replace model.onnx (and the engine) by the float stage the decision chose; the final row takes its figures."""
    src = meter.onnx_files[decision["float"]]
    onnx_path = stage / "model.onnx"
    copy_atomic(src.path, onnx_path)
    final_art = dataclasses.replace(src, path=onnx_path)
    source_row = next(s for s in stages if s["stage"] == decision["float"])
    row = {**meter.onnx("final", final_art), "seconds": stages[-1].get("seconds", 0.0), "note": f"{decision['float']} (float) shipped"}
    for key in ("latency", *SPEEDUP_FIELDS):
        if key in source_row:
            row[key] = source_row[key]
    stages[-1] = row
    built = run.target.build(final_art, stage / "model.engine") if run.availability.available else final_art
    return final_art, built if isinstance(built, EngineArtifact) else None


def chosen_spec(spec: ProfileSpec, latency: dict[str, Any]) -> ProfileSpec:
    """The profile spec at the runtime settings session tuning chose for a model (the spec itself untuned)."""
    chosen = (latency.get("settings") or {}).get("chosen")
    return spec.with_settings(chosen) if chosen else spec


def write_session_file(target: Any, spec: ProfileSpec, latency: dict[str, Any], stage: Path) -> dict[str, Any] | None:
    """model.session.json: the runtime settings the shipped model was measured (and gated) at, for the user's runtime."""
    deploy = target.deploy_settings(chosen_spec(spec, latency))
    if deploy is None:
        return None
    deploy = {**deploy, "measured": {k: latency.get(k) for k in ("p50_ms", "p90_ms", "p99_ms")}}
    write_json_atomic(stage / SESSION_FILE, deploy)
    return {"file": SESSION_FILE, **deploy}
