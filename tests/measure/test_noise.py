"""A busy host is named, and does not loosen a derived budget: compress's teacher measurement with CPU-burning
neighbour processes (started here) is flagged noisy, and the figure the budget comes from stays inside the
quiet measurement's interval (contention only adds time; the lowest of the re-measurements is kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from squeeze.io.modelio import load_model
from squeeze.io.onnx_export import ExportConfig, export_onnx
from squeeze.measure.latency import bootstrap_median_ci, compare, host_load_now
from squeeze.run import budget as budgets
from squeeze.run.stages import budget_measurement, closing_config
from squeeze.targets.base import ProfileSpec
from squeeze.targets.cpu import CpuTarget
from squeeze.targets.ort_runtime import usable_cores

ROOT = Path(__file__).resolve().parents[2]
# one intra-op thread: a neighbour burning half the cores leaves this one a core of its own, as a pinned
# --threads 1 deployment on a shared CI runner would have
SPEC = ProfileSpec(warmup=5, iterations=100, threads=1)
PINNED_BURNER = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"  # a neighbour busy on one core
SHARED_CORE_SLACK = 1.15  # the loaded-host tolerance issue 16 sets for a printed speed-up


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory):
    teacher = load_model(ROOT / "samples" / "teachers" / "resnet_digits.pt")
    return export_onnx(teacher, tmp_path_factory.mktemp("noise") / "teacher.onnx", ExportConfig())


class _Aims:
    """A pass that aims at a latency of its own accord (what makes compress derive a budget)."""

    def aims_at_latency(self, config):
        return True


@pytest.mark.serial  # a quiet host of its own, every core: run after the parallel phase (pyproject.toml)
@pytest.mark.skipif(usable_cores() < 2, reason="needs a core for the neighbour and one for the measurement")
def test_cpu_burning_neighbour_is_flagged_and_does_not_inflate_the_derived_budget(teacher_onnx):
    target = CpuTarget()
    quiet = compare(target, {"teacher": teacher_onnx}, closing_config(SPEC))
    quiet_low, quiet_high = bootstrap_median_ci(quiet.per_round["teacher"])
    # each neighbour pinned to a core of the last half, as another job's cpuset would be: unpinned, the scheduler
    # now and then put one on the measurement's core (a clean-clone CI run read 19 % inflation that way)
    cores = sorted(os.sched_getaffinity(0))
    burners = [subprocess.Popen([sys.executable, "-c", PINNED_BURNER, str(core)]) for core in cores[len(cores) - max(1, len(cores) // 2):]]
    try:
        time.sleep(0.5)
        progress: list[str] = []
        measured = budget_measurement(target, teacher_onnx, SPEC, progress.append)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert measured["noisy"] and any("oversubscribed" in why for why in measured["why_noisy"]), measured
    assert len(measured["attempts"]) == 3 and all(a["noisy"] for a in measured["attempts"])
    assert any("measuring again" in line for line in progress)
    # the budget's source is the fastest attempt, and stays near the quiet interval. The slack is for what a
    # busy neighbour core really costs the other one (a shared L3 and memory bus, a lower all-core clock: 7 %
    # on a CI runner, nothing here), not for time-slicing, which inflated the budgets 4-10x.
    assert measured["p50_ms"] == min(a["p50_ms"] for a in measured["attempts"])
    assert measured["p50_ms"] <= SHARED_CORE_SLACK * quiet_high, (measured["attempts"], quiet_low, quiet_high)
    budget = budgets.derive(None, measured, [SimpleNamespace(pass_=_Aims(), config=SimpleNamespace())])
    assert budget["noisy"] and budget["latency_ms"] <= SHARED_CORE_SLACK * quiet_high / budgets.DERIVED_SPEEDUP


def test_first_round_progress_says_when_the_interval_comes_not_nan():
    """One round gives one paired ratio, so no bootstrap interval yet: the live line says so instead of 'nan-nan'."""
    from squeeze.measure.latency import _report_round

    lines: list[str] = []
    one_round = {"student": {"ratio": 0.1, "ci95": [float("nan"), float("nan")], "tight": False}}
    _report_round(lines.append, 0, 2, "cpu", one_round)
    two_rounds = {"student": {"ratio": 0.1, "ci95": [0.09, 0.11], "tight": False}}
    _report_round(lines.append, 1, 2, "cpu", two_rounds)
    assert "nan" not in lines[0] and "interval after the next round" in lines[0]
    assert lines[1].endswith("widest ratio interval 0.090-0.110")


def test_a_high_load_average_from_our_own_last_stage_is_not_called_oversubscribed(monkeypatch):
    """The 1-minute load average remembers our own distillation just before the closing rounds (a quiet host read
    'oversubscribed, other processes used 0 %'): only other processes' measured CPU share or steal decide."""
    from squeeze.measure import latency

    ticks = iter([(1000, 4000, 0), (1000, 4400, 0)])  # nobody else busy over the window
    monkeypatch.setattr(latency, "_cpu_times", lambda cpus=None: next(ticks))
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    quiet = latency.LoadSampler().finish()
    assert quiet.load_average == 9.0 and not quiet.oversubscribed
    ticks = iter([(1000, 4000, 0), (1300, 4400, 0)])  # others kept 3/4 of the CPU busy
    monkeypatch.setattr(latency, "_cpu_times", lambda cpus=None: next(ticks))
    assert latency.LoadSampler().finish().oversubscribed


@pytest.mark.serial
@pytest.mark.skipif(usable_cores() < 2, reason="needs a core for the neighbour and one for the measurement")
def test_a_process_pinned_to_a_core_is_busy_only_when_its_own_core_is():
    """Pinned (taskset, a CI job's cpuset, a test worker), a neighbour busy on another core does not make the host
    oversubscribed for us; one on our core does."""
    cores = sorted(os.sched_getaffinity(0))
    ours, other = cores[0], cores[1]
    burners = [subprocess.Popen([sys.executable, "-c", PINNED_BURNER, str(other)])]
    try:
        os.sched_setaffinity(0, {ours})
        time.sleep(0.5)
        beside = host_load_now(1.0)
        burners.append(subprocess.Popen([sys.executable, "-c", PINNED_BURNER, str(ours)]))
        time.sleep(0.5)
        on_ours = host_load_now(1.0)
    finally:
        os.sched_setaffinity(0, set(cores))
        for burner in burners:
            burner.kill()
            burner.wait()
    assert beside.cores == 1 and not beside.oversubscribed, beside
    assert on_ours.cores == 1 and on_ours.oversubscribed and on_ours.others_busy_share > 0.5, on_ours
