"""Measuring prune candidates: exported to ONNX and timed on the target through the one latency measurer
(squeeze/measure/latency.py); targets that cannot measure here predict, labelled so; tests inject latencies."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from squeeze.errors import TargetUnavailableError
from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.passes.prune.structure import architecture_key
from squeeze.targets.base import Target


@dataclass
class Measurement:
    """Latencies (ms) of several models, one value per interleaved round."""

    rounds: list[list[float]]  # [model][round]
    kind: str  # "measured", "predicted" or "injected"
    stats: list[dict[str, Any] | None] = field(default_factory=list)

    def latency(self, i: int) -> float:
        return float(statistics.median(self.rounds[i]))

    def ratio(self, i: int, j: int) -> float:
        """Median over rounds of latency(i) / latency(j): each ratio compares numbers taken moments apart."""
        return float(statistics.median(a / b for a, b in zip(self.rounds[i], self.rounds[j])))


class LatencyMeter:
    """Protocol: measure(models, rounds, iterations) -> Measurement."""

    kind: str = "measured"

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:  # pragma: no cover
        raise NotImplementedError


class TargetLatency(LatencyMeter):
    """Export each model to ONNX and time it with the target's own profiler (`target.profile`).

    Targets that cannot measure on this machine but offer `predict(onnx, spec)` are used through
    it, and every figure is labelled "predicted". Models are measured round-robin, the order
    rotating each round, so slow drift on a shared machine hits all of them alike.
    """

    def __init__(self, target: Target, spec: InputSpec, workdir: Path, exporter: str = "dynamo", threads: int | None = None,
                 cache: bool = True, stat: str = "p50"):
        self.target, self.spec, self.workdir, self.exporter, self.threads, self.cache = target, spec, Path(workdir), exporter, threads, cache
        self.stat = f"{stat}_ms"
        availability = target.available()
        if availability.available:
            self.kind = "measured"
        elif target.can_predict():
            self.kind = "predicted"
        else:
            raise TargetUnavailableError(f"target {target.name} cannot measure latency here and has no offline predictor: {availability.reason}")
        self._onnx: dict[str, OnnxArtifact] = {}

    def _export(self, model: nn.Module) -> OnnxArtifact:
        from squeeze.io.onnx_export import ExportConfig, export_onnx

        key = architecture_key(model) if self.cache else f"{id(model)}-{len(self._onnx)}"
        if key not in self._onnx:
            art = ModelArtifact(model.eval(), self.spec, "prune-candidate", "checkpoint", "")
            path = self.workdir / f"{key}-{self.exporter}.onnx"
            self._onnx[key] = export_onnx(art, path, ExportConfig(exporter=self.exporter, parity_samples=8))
        return self._onnx[key]

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:
        """One interleaved comparison (squeeze/measure/latency.py) of the models, the first as the reference;
        at least `rounds` rounds, more (up to twice) while a ratio to the first is loose."""
        from squeeze.measure.latency import MeasureConfig, compare

        arts = {str(i): self._export(m) for i, m in enumerate(models)}
        settings = MeasureConfig(block_iterations=iterations, warmup=warmup, min_rounds=rounds, max_rounds=2 * rounds, time_cap_s=120.0,
                                 statistic=self.stat.removesuffix("_ms"), threads=self.threads, tune="threads")
        result = compare(self.target, arts, settings, reference="0")
        return Measurement([result.per_round[n] for n in arts], result.kind, [result.stats[n] for n in arts])


class CallableLatency(LatencyMeter):
    """Latency from a function of the model (tests inject deterministic ones; no export)."""

    def __init__(self, fn: Callable[[nn.Module], float], kind: str = "injected"):
        self.fn, self.kind = fn, kind

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:
        return Measurement([[float(self.fn(m))] for m in models], self.kind, [None] * len(models))
