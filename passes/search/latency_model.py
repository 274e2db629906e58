"""Search's candidate latency from the cpu latency model (squeeze/targets/cpu_latency_model.py) instead of timing
each candidate (`--latency-source model`, cpu target).

The model is fitted once per machine key (CPU, usable cores, ORT version, threads) on 16 students of the search's own
space at the teacher's input shape, timed by the one measurer; it is stored beside the latency cache and reused while
the key matches. Each candidate is then exported and predicted, not timed, so a busy host cannot reorder the
candidates: an export (~50 ms) instead of an export and a timing (on CIFAR-size students 99 against 185 ms per
candidate on a 2-core Xeon; on MNIST-size ones about the same). The shortlist is measured before anything is chosen:
the first shortlisted candidate whose measured latency meets the budget goes first, so the student search hands on
is within the budget by measurement, not by prediction.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from squeeze.errors import UserInputError
from squeeze.io.artifacts import InputSpec
from squeeze.measure.latency import MeasureConfig, measure_one
from squeeze.passes.search.latency import LatencyOracle, _Stats, export_candidate
from squeeze.passes.search.spaces import SearchSpace
from squeeze.targets import cpu_latency_model as clm
from squeeze.targets.base import ProfileSpec, Target

SOURCES = ("measure", "model")
CALIBRATION_STUDENTS = 16  # timed once per machine: 12 fit the 5 coefficients, 4 held out report the error
HELD_OUT = 4
MODEL_FILE = "cpu-latency-model-{space}-c{multiple}-{shape}-{threads}t.json"  # fitted on that space's students at that input shape


def fitted_model(target: Target, space: SearchSpace, input_spec: InputSpec, profile: ProfileSpec, model_path: Path | None,
                 in_channels: int, num_classes: int, seed: int, progress: Callable[[str], None]) -> clm.CpuLatencyModel:
    """This machine's stored model, or one fitted now on CALIBRATION_STUDENTS students of `space` (then stored)."""
    threads = profile.threads or 1
    if model_path is not None and (stored := clm.load(model_path, threads)) is not None:
        progress(f"cpu latency model: reusing {model_path} (fitted on {stored.fitted_on} students, held-out median error "
                 f"{(stored.held_out_median_error or 0) * 100:.1f} %)")
        return stored
    rng, genomes = random.Random(seed), {space.key(space.smallest()): space.smallest()}
    for _ in range(50 * CALIBRATION_STUDENTS):
        if len(genomes) == CALIBRATION_STUDENTS:
            break
        genome = space.sample(rng)
        genomes.setdefault(space.key(genome), genome)
    if len(genomes) < CALIBRATION_STUDENTS:
        raise UserInputError(f"--latency-source model: space {space.name} has fewer than {CALIBRATION_STUDENTS} architectures to fit "
                             "a latency model on; measure instead (--latency-source measure)")
    progress(f"cpu latency model: timing {len(genomes)} students of space {space.name} once for this machine ({threads} thread(s))")
    settings = MeasureConfig(block_iterations=max(profile.iterations, 100), warmup=profile.warmup, min_rounds=3, max_rounds=3, threads=threads)
    paths, p50s, p90_ratios = [], [], []
    with tempfile.TemporaryDirectory(prefix="squeeze-latency-model-") as tmp:
        for i, genome in enumerate(genomes.values()):
            art = export_candidate(space.build(genome, in_channels, num_classes), input_spec, Path(tmp) / f"student{i}.onnx")
            stats = measure_one(target, art, settings).stats["model"]
            paths.append(art.path)
            p50s.append(stats["p50_ms"])
            p90_ratios.append(stats["p90_ms"] / stats["p50_ms"])
        model = clm.calibrate(paths, p50s, threads, held_out=HELD_OUT)
    model.details["p90_over_p50_median"] = statistics.median(p90_ratios)
    model.details["space"] = space.name
    progress(f"cpu latency model: fitted on {model.fitted_on} students, median error {model.held_out_median_error * 100:.1f} % on "
             f"{HELD_OUT} it did not see")
    if model_path is not None:
        clm.save(model, model_path)
    return model


class ModelledLatencyOracle(LatencyOracle):
    """The LatencyOracle's interface and cache, with each candidate's figures predicted by the fitted model."""

    def __init__(self, target: Target, input_spec: InputSpec, profile: ProfileSpec, cache_path: Path | None, model: clm.CpuLatencyModel):
        super().__init__(target, input_spec, profile, cache_path)
        self.measured = False
        self.model = model

    def key(self, spec: dict[str, Any]) -> str:  # a refitted model predicts afresh
        return hashlib.sha256((super().key(spec) + json.dumps(self.model.coefficients)).encode()).hexdigest()

    def _run(self, module: nn.Module):
        with tempfile.TemporaryDirectory(prefix="squeeze-search-") as tmp:
            p50 = self.model.predict_ms(export_candidate(module, self.input_spec, Path(tmp) / "candidate.onnx").path)
        p90 = p50 * float(self.model.details.get("p90_over_p50_median", 1.0))
        return _Stats({"p50_ms": p50, "p90_ms": p90, "mean_ms": p50, "measured": False, "predicted_by": "cpu latency model",
                       "model_held_out_median_error": self.model.held_out_median_error})

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "source": "cpu latency model", "model": {"fitted_on": self.model.fitted_on, "key": self.model.key,
                "held_out_median_error": self.model.held_out_median_error}}


def modelled_oracle(target: Target, space: SearchSpace, input_spec: InputSpec, profile: ProfileSpec, cache_path: Path | None,
                    in_channels: int, num_classes: int, seed: int, progress: Callable[[str], None]) -> ModelledLatencyOracle:
    if not getattr(target, "runs_on_ort_cpu", False):
        raise UserInputError(f"--latency-source model predicts ONNX Runtime CPU latency: it serves --target cpu only, not {target.name} "
                             "(that target measures, or predicts through its own runtime's model)")
    name = MODEL_FILE.format(space=space.name.replace("/", "_").replace(":", "_"), multiple=space.channel_multiple,
                             shape="x".join(map(str, input_spec.shape[1:])), threads=profile.threads or 1)
    model_path = cache_path.parent / name if cache_path is not None else None
    model = fitted_model(target, space, input_spec, profile, model_path, in_channels, num_classes, seed, progress)
    return ModelledLatencyOracle(target, input_spec, profile, cache_path, model)


def measure_shortlist(top: list[Any], measure: Callable[[Any], dict[str, Any]], budget_ms: float | None, metric_key: str,
                      progress: Callable[[str], None]) -> list[Any]:
    """Measure the predicted shortlist in order; the first whose measured figure meets the budget goes first.

    Each candidate keeps its prediction as metrics['latency_predicted'] and gets the measured figures as
    metrics['latency']. None meeting it: the order stands (the caller's within-budget check reports it)."""
    for cand in top:
        cand.metrics["latency_predicted"] = cand.metrics.get("latency")
        cand.metrics["latency"] = measure(cand)
    if budget_ms is None:
        return top
    within = [c for c in top if c.metrics["latency"][metric_key] <= budget_ms]
    if within and within[0] is not top[0]:
        progress(f"measured: the predicted first exceeds the budget ({top[0].metrics['latency'][metric_key]:.3f} ms); "
                 f"shortlist #{top.index(within[0]) + 1} meets it ({within[0].metrics['latency'][metric_key]:.3f} ms)")
        return [within[0], *(c for c in top if c is not within[0])]
    return top
