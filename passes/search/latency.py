"""Candidate latency through the target protocol, with an on-disk JSON cache.

Each candidate is exported to ONNX by the export pass's machinery (legacy exporter: ~10x faster
than dynamo per call; a cheap 8-sample parity check still guards against timing a broken
graph), then `target.profile(...)` measures it. Targets that cannot measure here (tensorrt,
jetson-*) are asked for `target.predict(onnx, spec)` instead, and every such number is labelled
predicted. The cache key is the student spec + input shape + target + runtime version + profile
settings (+ the host CPU for measured numbers), so a re-run, or the next search on this machine,
re-uses measurements instead of repeating them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from torch import nn

from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.io.fsutil import write_json_atomic
from squeeze.measure.latency import MeasureConfig, measure_one
from squeeze.targets.base import ProfileSpec, Target

CACHE_VERSION = 2  # 2: entries hold the whole LatencyStats record
METRICS = ("p50", "p90", "mean")


def default_cache_path() -> Path:
    root = os.environ.get("SQUEEZE_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "squeeze")
    return Path(root) / "latency.json"


def export_candidate(module: nn.Module, spec: InputSpec, path: Path):
    """A search candidate as ONNX: the legacy exporter (~10x faster than dynamo per call), with a cheap 8-sample
    parity check so a broken graph is never timed or predicted."""
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    return export_onnx(ModelArtifact(module.eval(), spec, "search-candidate", "module", ""), path,
                       ExportConfig(exporter="legacy", parity_samples=8))


class _Stats(dict):
    """A LatencyStats-like record: to_dict() and .measured, as the oracle's callers read them."""

    @property
    def measured(self) -> bool:
        return bool(self.get("measured", True))

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class LatencyOracle:
    """latency(spec, module) -> {'p50_ms', 'p90_ms', 'mean_ms', 'measured', ...}, cached on disk."""

    def __init__(self, target: Target, input_spec: InputSpec, profile: ProfileSpec, cache_path: Path | None):
        self.target = target
        self.input_spec = input_spec
        self.profile_spec = profile
        self.cache_path = Path(cache_path) if cache_path is not None else None
        availability = target.available()
        if availability.available:
            self.measured = True
        elif target.can_predict():
            self.measured = False
        else:
            raise TargetUnavailableError(
                f"target {target.name} cannot measure latency here ({availability.reason}) and has no latency predictor; "
                "search on a machine where it is available, or drop --latency-budget")
        if self.measured:
            from squeeze.targets.ort_runtime import host_info

            host = host_info()
            self.host = {"cpu": host["cpu"], "usable_cores": host["usable_cores"], "machine": host["machine"]}
        else:
            self.host = {}
        self.runtime_version = str(availability.details.get("runtime_version") or self._runtime_guess())
        self.entries: dict[str, Any] = self._load()
        self.hits = self.misses = 0
        self.seconds = 0.0

    def _runtime_guess(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}" if self.target.name in ("cpu", "cuda") else "unknown"

    def _load(self) -> dict[str, Any]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        try:
            data = json.loads(self.cache_path.read_text())
            return dict(data["entries"]) if data.get("version") == CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # a damaged cache is re-measured, never trusted

    def key(self, spec: dict[str, Any]) -> str:
        p = self.profile_spec
        payload = {"spec": spec, "input_shape": list(self.input_spec.shape[1:]), "target": self.target.name,
                   "runtime_version": self.runtime_version, "measured": self.measured, "host": self.host,
                   "profile": {"batch_size": p.batch_size, "warmup": p.warmup, "iterations": p.iterations, "threads": p.threads},
                   "tuning": "threads"}  # figures at each candidate's fastest thread count
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def latency(self, spec: dict[str, Any], module: nn.Module) -> dict[str, Any]:
        key = self.key(spec)
        if key in self.entries:
            self.hits += 1
            return {**self.entries[key], "cached": True}
        self.misses += 1
        started = time.perf_counter()
        stats = self._run(module)
        # The whole LatencyStats record (what compress's manifest stores), plus what was measured and when.
        entry = {**stats.to_dict(), "measured": bool(stats.measured) and self.measured, "arch": spec,
                 "when_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.seconds += time.perf_counter() - started
        self.entries[key] = entry
        self._save()
        return {**entry, "cached": False}

    def _run(self, module: nn.Module):
        with tempfile.TemporaryDirectory(prefix="squeeze-search-") as tmp:
            onnx_art = export_candidate(module, self.input_spec, Path(tmp) / "candidate.onnx")
            p = self.profile_spec  # one block per candidate through the one measurer (its stats record the host's load)
            cfg = MeasureConfig(block_iterations=p.iterations, warmup=p.warmup, min_rounds=1, max_rounds=1, batch_size=p.batch_size,
                                threads=p.threads, tune="threads")  # aim at the tuned latency compress will ship
            result = measure_one(self.target, onnx_art, cfg)
            return _Stats({**result.stats["model"], "measured": result.kind == "measured", "load": result.load})

    def _save(self) -> None:
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            # Re-read first so two searches sharing the cache keep each other's entries (last writer still wins a race).
            merged = {**self._load(), **self.entries}
            write_json_atomic(self.cache_path, {"version": CACHE_VERSION, "entries": merged})
        except OSError:
            pass  # an unwritable cache only costs re-measurement later

    def stats(self) -> dict[str, Any]:
        return {"cache": str(self.cache_path) if self.cache_path else None, "hits": self.hits, "misses": self.misses,
                "seconds_measuring": round(self.seconds, 2), "measured": self.measured, "runtime_version": self.runtime_version}
