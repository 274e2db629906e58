"""Session tuning in the one measurer: every candidate setting timed in the same rounds, the fastest chosen at
the gated statistic, clearly slower ones dropped after two rounds; the cpu target's candidates."""

from __future__ import annotations

import dataclasses

import pytest

from squeeze.errors import UserInputError
from squeeze.measure.latency import MeasureConfig, compare
from squeeze.run.report import speedup_text
from squeeze.targets.base import Availability, ProfileSpec, TargetBase
from squeeze.targets.cpu import CpuTarget


@dataclasses.dataclass
class _Stats:
    p50_ms: float
    p90_ms: float

    def to_dict(self) -> dict:
        return {"p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p90_ms, "options": {}}


class ThreadsTarget(TargetBase):
    """A target whose latency depends on the settings: a model named 'small' is fastest at 1 thread, 'big' at 3;
    'spiky' has the lowest p50 at 2 threads but the lowest p90 at 1."""

    name = "fake-threads"
    description = "deterministic latencies per setting"

    def __init__(self) -> None:
        self.timed: list[tuple[str, int]] = []

    def available(self) -> Availability:
        return Availability(True, "fake")

    def settings_candidates(self, spec: ProfileSpec, scope: str) -> list[ProfileSpec]:
        return [spec] if spec.threads else [dataclasses.replace(spec, threads=t) for t in (1, 2, 3)]

    def profile(self, art: str, spec: ProfileSpec) -> _Stats:
        self.timed.append((art, spec.threads))
        p50 = {"small": {1: 1.0, 2: 1.3, 3: 1.6}, "big": {1: 9.0, 2: 5.0, 3: 4.0}, "spiky": {1: 2.0, 2: 1.8, 3: 5.0}}[art][spec.threads]
        p90 = p50 * (1.1 if art != "spiky" or spec.threads == 1 else 1.6)
        return _Stats(p50, p90)


FAST = dict(block_iterations=2, warmup=0, min_rounds=5, max_rounds=5, ci=0.03, time_cap_s=60.0)


def test_each_model_ships_at_its_fastest_setting_with_every_candidate_recorded():
    target = ThreadsTarget()
    result = compare(target, {"small": "small", "big": "big"}, MeasureConfig(**FAST, tune="threads"), reference="big")
    assert result.settings["small"]["chosen"]["threads"] == 1 and result.settings["big"]["chosen"]["threads"] == 3
    assert result.stats["small"]["p50_ms"] == 1.0 and result.stats["big"]["p50_ms"] == 4.0
    assert result.ratios["small"]["ratio"] == pytest.approx(0.25)  # the tuned pair, not the same-threads pair
    candidates = {c["threads"]: c for c in result.settings["big"]["candidates"]}
    assert set(candidates) == {1, 2, 3} and candidates[1]["vs_chosen"] == pytest.approx(9.0 / 4.0)
    # settings more than 15 % slower after two rounds are not timed again: 'small' at 3 threads ran twice only
    assert target.timed.count(("small", 3)) == 2 and target.timed.count(("small", 1)) == 5
    assert result.per_round_by_statistic["p90"]["small"] == [pytest.approx(1.1)] * 5


def test_settings_are_chosen_by_the_gated_statistic():
    by_p50 = compare(ThreadsTarget(), {"spiky": "spiky"}, MeasureConfig(**FAST, tune="threads"))
    by_p90 = compare(ThreadsTarget(), {"spiky": "spiky"}, MeasureConfig(**FAST, tune="threads", choose_by="p90"))
    assert by_p50.settings["spiky"]["chosen"]["threads"] == 2
    assert by_p90.settings["spiky"]["chosen"]["threads"] == 1 and by_p90.settings["spiky"]["statistic"] == "p90_ms"


def test_a_pinned_thread_count_is_not_tuned():
    target = ThreadsTarget()
    result = compare(target, {"big": "big"}, MeasureConfig(**FAST, tune="full", threads=2))
    assert result.settings == {} and {t for _, t in target.timed} == {2} and result.stats["big"]["p50_ms"] == 5.0


def test_cpu_candidates_cover_threads_spinning_and_layout(monkeypatch):
    monkeypatch.setattr("squeeze.targets.cpu.usable_cores", lambda: 2)
    full = CpuTarget().settings_candidates(ProfileSpec(), "full")
    assert {(s.threads, s.spinning, s.optimization) for s in full} == {
        (1, None, "all"), (1, None, "extended"), (2, True, "all"), (2, False, "all"), (2, True, "extended"), (2, False, "extended")}
    assert [s.threads for s in CpuTarget().settings_candidates(ProfileSpec(), "threads")] == [1, 2]
    assert {s.threads for s in CpuTarget().settings_candidates(ProfileSpec(threads=1), "full")} == {1}


def test_bad_tuning_options_are_refused():
    with pytest.raises(UserInputError, match="tune must be"):
        MeasureConfig(tune="everything")
    with pytest.raises(UserInputError, match="choose_by"):
        MeasureConfig(choose_by="p75")
    with pytest.raises(UserInputError, match="graph optimisation"):
        ProfileSpec(optimization="fast")


def test_the_speed_up_is_taken_at_the_models_own_settings_with_the_teachers_fastest_beside_it():
    """The reference stays timed at the setting the small model ships at (1 thread) although that is 2.25x its
    fastest: the printed speed-up pairs the two at one thread (9.0 / 1.0), the 'tuned' one each at its fastest (4.0 / 1.0)."""
    target = ThreadsTarget()
    result = compare(target, {"small": "small", "big": "big"}, MeasureConfig(**FAST, tune="threads"), reference="big")
    assert target.timed.count(("big", 1)) == 5 and target.timed.count(("big", 2)) == 2  # the twin of small's setting, every round
    matched = result.matched["small"]
    assert matched["ratio"] == pytest.approx(1 / 9) and matched["settings"]["threads"] == 1
    assert matched["reference"] == {"teacher_p50_ms": 9.0, "teacher_p90_ms": pytest.approx(9.9)}
    printed = result.speedup("small")
    assert printed["speedup_p50"] == pytest.approx(9.0) and printed["speedup_tuned_p50"] == pytest.approx(4.0)
    assert printed["speedup_basis"]["teacher_settings"]["threads"] == 1
    text = speedup_text(printed)  # the console caption's, the footer's and the report's words
    assert text.startswith("9.0× faster") and "than the teacher at the same settings (1 thread" in text and ": 9.000 ms p50)" in text
    assert text.endswith("; 4.0× vs the teacher at its own fastest settings")


def test_without_tuning_the_printed_speed_up_is_the_one_pair():
    target = ThreadsTarget()
    result = compare(target, {"small": "small", "big": "big"}, MeasureConfig(**FAST, tune="off", threads=2), reference="big")
    assert result.matched == {}
    printed = result.speedup("small")
    assert printed["speedup_p50"] == printed["speedup_tuned_p50"] == pytest.approx(5.0 / 1.3) and "speedup_basis" not in printed
