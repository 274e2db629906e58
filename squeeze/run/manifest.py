"""The manifest compress writes (schema: squeeze/run/schema.py) and the verdict a CI job gates on."""

from __future__ import annotations

import datetime as dt
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.io.fsutil import sha256_file
from squeeze.run.schema import SCHEMA_VERSION


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


def gate_verdict(latency: dict[str, Any], accuracy: dict[str, Any] | None, parity: dict[str, Any],
                 budget_ms: float | None, max_drop: float | None, budget_ratio: float | None = None,
                 teacher_latency: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every requested check must hold; parity always binds. A relative budget checks the output's p90 against the
    teacher's, both timed in the same interleaved rounds (each at its own fastest settings)."""
    checks = []
    if "passed" in parity:
        checks.append({"check": "onnx_parity", "passed": bool(parity["passed"]), "value": parity["max_abs_diff"],
                       "limit": parity["tolerance_max_abs"]})
    if budget_ms is not None:
        checks.append({"check": "latency_p90_ms", "passed": latency["p90_ms"] <= budget_ms, "value": latency["p90_ms"], "limit": budget_ms,
                       "measured": latency.get("measured", True)})
    if budget_ratio is not None and teacher_latency:
        ratio = latency["p90_ms"] / teacher_latency["p90_ms"]
        checks.append({"check": "latency_p90_vs_teacher", "passed": ratio <= budget_ratio, "value": ratio, "limit": budget_ratio,
                       "measured": latency.get("measured", True), "teacher_p90_ms": teacher_latency["p90_ms"]})
    if max_drop is not None:
        drop = 100.0 * (accuracy["teacher_accuracy"] - accuracy["output_accuracy"])
        checks.append({"check": "accuracy_drop_pct_points", "passed": drop <= max_drop, "value": drop, "limit": max_drop})
    return {"verdict": "pass" if all(c["passed"] for c in checks) else "fail", "checks": checks}


@dataclass
class Outcome:
    """What a finished run produced, for the manifest."""

    stages: list[dict[str, Any]]
    records: list[dict[str, Any]]
    results: dict[str, Any]
    final: Any  # OnnxArtifact in the output directory
    engine: Any  # EngineArtifact, or None for targets that run the ONNX
    accuracy: dict[str, Any] | None
    measurement: Any  # squeeze.measure.latency.Comparison of the closing rounds
    layer_latency: dict[str, Any] | None
    budget: dict[str, Any]
    gate: dict[str, Any]
    precision: dict[str, Any] | None = None  # INT8 vs its float input, decided on the closing rounds (squeeze.run.closing)
    deploy: dict[str, Any] | None = None  # the runtime settings written to model.session.json
    fidelity: dict[str, Any] | None = None  # a map's or values' output NMSE (and pixel figures) against the teacher (squeeze/measure/fidelity.py)


def measurement_summary(comparison: Any) -> dict[str, Any]:
    """How the closing rounds went: rounds, why they stopped, the host's load, and whether to trust them."""
    return {"kind": comparison.kind, "statistic": comparison.statistic, "rounds": comparison.rounds, "seconds": comparison.seconds,
            "stopped": comparison.stopped, "load": comparison.load, "noisy": comparison.noisy, "why_noisy": comparison.why_noisy}


def build(run: Any, outcome: Outcome, stage: Path, started: dt.datetime, seconds: float) -> dict[str, Any]:
    """`run` is compress's Prepared run; `outcome` what its passes and measurements produced."""
    from squeeze.run.outputs import distillation, output_record

    final_row, teacher_row = outcome.stages[-1], outcome.stages[0]
    final = outcome.final
    files = [final.path, stage / "teacher.onnx", *([outcome.engine.path, *outcome.engine.companions] if outcome.engine is not None else []),
             *([stage / outcome.deploy["file"]] if outcome.deploy else [])]
    artifacts = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
    latency, teacher_latency = final_row["latency"], teacher_row["latency"]
    bundle, teacher, tgt = run.bundle, run.teacher, run.target
    return {
        "schema_version": SCHEMA_VERSION,
        "squeeze_version": __version__,
        "created_utc": started.isoformat(timespec="seconds"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "command": run.command or sys.argv,
        "recipe": run.plan.to_dict(),
        "recipe_source": run.plan.source,
        "target": {"name": tgt.name, "description": tgt.description, "availability": run.availability.reason,
                   "can_measure": run.availability.available},
        "teacher": {**teacher.describe(), "params": teacher_row["params"], "macs": teacher_row["macs"],
                    "recorded": {k: teacher.metadata[k] for k in ("dataset", "eval_accuracy", "arch") if k in teacher.metadata}},
        "data": bundle.describe() if bundle else None,
        "output": output_record(teacher, bundle),
        "dropped": run.dropped or [],
        "preprocessing": final.input_spec.preprocessing(bundle.normalization if bundle else None),
        "student": ({k: v for k, v in outcome.results["distill"].items() if k not in ("data", "teacher")} if "distill" in outcome.results
                    else None),
        "search": outcome.results.get("search"),
        "pass_results": {k: v for k, v in outcome.results.items() if k != "budget"},
        "passes": outcome.records,
        "stages": outcome.stages,
        "outputs": {
            "model.onnx": {**artifacts[final.path.name], "opset": final.opset, "input_spec": final.input_spec.to_dict(),
                           "params": final_row["params"], "macs": final_row["macs"],
                           "exporter": (outcome.results.get("export") or {}).get("exporter")},
            **({"engine": {"path": outcome.engine.path.name, **artifacts[outcome.engine.path.name]}} if outcome.engine is not None else {}),
        },
        "artifacts": artifacts,
        "parity": final.parity or {},
        "accuracy": outcome.accuracy,
        "fidelity": outcome.fidelity,
        "distillation": distillation(outcome.results),
        "latency": latency,
        "teacher_latency": teacher_latency,
        "layer_latency": outcome.layer_latency,
        "speedup_p50": final_row.get("speedup_p50", teacher_latency["p50_ms"] / latency["p50_ms"]),
        "speedup_ci95": final_row.get("speedup_ci95"),
        # the headline is the teacher at the output's runtime settings (basis); 'tuned': the teacher at its own fastest
        **{k: final_row[k] for k in ("speedup_tuned_p50", "speedup_tuned_ci95", "speedup_basis") if k in final_row},
        "measurement": measurement_summary(outcome.measurement),
        "precision": outcome.precision,
        "deploy": outcome.deploy,
        "budget": {**outcome.budget, "max_accuracy_drop": run.max_accuracy_drop},
        "gate": outcome.gate,
        "cache": {"dir": str(run.cache.root), "resume": run.cache.resume},
        "versions": versions(),
    }
