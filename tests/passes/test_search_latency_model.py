"""`--latency-source model`: search predicts each candidate with the cpu latency model (fitted once per machine on the
space's own students), then measures the shortlist and puts the first measured within budget first (issue 16)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from squeeze.errors import UserInputError
from squeeze.io.data import load_data
from squeeze.io.modelio import load_model
from squeeze.passes.search import SearchConfig, search
from squeeze.passes.search.evolution import Candidate
from squeeze.passes.search.latency_model import CALIBRATION_STUDENTS, HELD_OUT, measure_shortlist
from squeeze.targets import get_target

ROOT = Path(__file__).resolve().parents[2]
DIGITS_TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"


def test_search_predicts_the_candidates_and_measures_the_shortlist(tmp_path):
    teacher, data = load_model(DIGITS_TEACHER), load_data("digits")
    cfg = SearchConfig(latency_budget_ms=5.0, latency_source="model", population=4, iterations=4, top_k=2, fewshot_top=0,
                       latency_cache=str(tmp_path / "latency.json"), channel_multiple=8)
    messages: list[str] = []
    outcome = search(teacher, data, get_target("cpu"), cfg, progress=messages.append)
    stored_path = tmp_path / "cpu-latency-model-resnet-c8-1x8x8-1t.json"  # fitted on the space at that width block
    stored = json.loads(stored_path.read_text())
    assert stored["fitted_on"] == CALIBRATION_STUDENTS - HELD_OUT and stored["held_out"] == HELD_OUT
    assert 0 <= stored["held_out_median_error"] < 1.0 and all(c >= 0 for c in stored["coefficients"])
    assert any(f"timing {CALIBRATION_STUDENTS} students" in m for m in messages)
    result = outcome.result
    assert result["target"]["latency"] == "predicted by the cpu latency model; the top-k measured"
    assert result["latency_cache"]["source"] == "cpu latency model" and result["latency_cache"]["misses"] >= 1
    shortlist = {id(c) for c in outcome.top}
    predicted = [c for c in {e.candidate.key: e.candidate for e in outcome.events}.values() if id(c) not in shortlist and "latency" in c.metrics]
    assert predicted and all(c.metrics["latency"]["kind"] == "predicted" for c in predicted)
    for cand in outcome.top:  # measured, with the prediction kept beside the measurement
        assert cand.metrics["latency"]["kind"] == "measured" and cand.metrics["latency_predicted"]["kind"] == "predicted"
    assert result["student"]["latency"]["kind"] == "measured" and result["within_budget"]["latency_final"]
    # the next search on this machine reuses the stored model: nothing is timed to fit it again
    again: list[str] = []
    search(teacher, data, get_target("cpu"), replace(cfg, seed=1), progress=again.append)
    assert any("cpu latency model: reusing" in m for m in again) and not any(f"timing {CALIBRATION_STUDENTS}" in m for m in again)
    assert json.loads(stored_path.read_text()) == stored


def _candidate(key: str, predicted_ms: float) -> Candidate:
    return Candidate(key, {}, {}, True, metrics={"latency": {"p50_ms": predicted_ms, "kind": "predicted"}})


def test_the_first_shortlisted_candidate_measured_within_the_budget_goes_first():
    measured = {"a": 0.30, "b": 0.25, "c": 0.15}
    measure = lambda c: {"p50_ms": measured[c.key], "kind": "measured"}  # noqa: E731
    said: list[str] = []
    order = measure_shortlist([_candidate(k, 0.1) for k in "abc"], measure, 0.2, "p50_ms", said.append)
    assert [c.key for c in order] == ["c", "a", "b"] and "shortlist #3 meets it (0.150 ms)" in said[0]
    assert all(c.metrics["latency"]["kind"] == "measured" and c.metrics["latency_predicted"]["p50_ms"] == 0.1 for c in order)
    assert [c.key for c in measure_shortlist([_candidate(k, 0.1) for k in "abc"], measure, 0.1, "p50_ms", said.append)] == ["a", "b", "c"]
    assert [c.key for c in measure_shortlist([_candidate(k, 0.1) for k in "abc"], measure, None, "p50_ms", said.append)] == ["a", "b", "c"]
    assert len(said) == 1  # nothing within the budget, or no budget: the order stands, silently


def test_latency_source_model_serves_the_cpu_target_only(tmp_path):
    teacher, data = load_model(DIGITS_TEACHER), load_data("digits")
    cfg = SearchConfig(latency_budget_ms=1.0, latency_source="model", population=4, iterations=4, top_k=2, fewshot_top=0,
                       latency_cache=str(tmp_path / "latency.json"))
    with pytest.raises(UserInputError, match="serves --target cpu only, not tensorrt"):
        search(teacher, data, get_target("tensorrt"), cfg)
    with pytest.raises(UserInputError, match="--latency-source must be one of measure, model"):
        SearchConfig(latency_source="guess")
