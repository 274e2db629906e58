"""compress's closing decisions: INT8 ships only when the closing rounds measured it faster than its float
input (at the gated p90), and the shipped model's runtime settings go to model.session.json, which a user's
ONNX Runtime loads (the report's snippet runs as written)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from squeeze.run import stages as stages_module
from squeeze.run.one_step import one_step_recipe
from squeeze.run.compress import compress
from squeeze.targets.base import ProfileSpec

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"
QUANTIZE = {"epochs": 0, "calib_samples": 64, "parity_samples": 128, "allow_slower": True, "latency_rounds": 3, "latency_iterations": 10}


def _is_int8(path: Path, memo: dict[str, bool] = {}) -> bool:
    key = str(path)
    if key not in memo:
        memo[key] = any(n.op_type == "QuantizeLinear" for n in onnx.load(key).graph.node)
    return memo[key]


def _closing_rounds_with(monkeypatch, int8_ms: float, float_ms: float) -> None:
    """The closing rounds time INT8 and float models at these (p50; p90 = 1.2x) figures instead of on the CPU."""
    real = stages_module.compare

    def profile(art):
        p50 = int8_ms if _is_int8(art.path) else float_ms
        return {"p50_ms": p50, "p90_ms": 1.2 * p50, "p99_ms": 1.3 * p50, "options": {}}

    monkeypatch.setattr(stages_module, "compare", functools.partial(real, profile=profile))


def _run(tmp_path: Path, name: str) -> dict:
    return compress(TEACHER, target="cpu", out=tmp_path / name, data="digits", recipe=one_step_recipe("quantize", QUANTIZE),
                    profile_spec=ProfileSpec(warmup=2, iterations=20))


@pytest.mark.parametrize("int8_ms, float_ms, ships_int8", [(2.0, 1.0, False), (0.5, 1.0, True)])
def test_int8_ships_only_when_the_closing_rounds_measured_it_faster(monkeypatch, tmp_path, int8_ms, float_ms, ships_int8):
    _closing_rounds_with(monkeypatch, int8_ms, float_ms)
    manifest = _run(tmp_path, "int8" if ships_int8 else "float")
    out = Path(manifest["out"])
    decision = manifest["precision"]
    assert decision["lowered"] == "quantize" and decision["float"] == "teacher" and decision["statistic"] == "p90_ms"
    assert decision["ratio"] == pytest.approx(int8_ms / float_ms)
    assert decision["candidates"]["quantize (lower precision)"]["p90_ms"] == pytest.approx(1.2 * int8_ms)
    assert decision["candidates"]["teacher (float)"]["p90_ms"] == pytest.approx(1.2 * float_ms)
    assert decision["shipped"] == ("quantize" if ships_int8 else "teacher")
    assert _is_int8(out / "model.onnx") == ships_int8
    assert manifest["latency"]["p90_ms"] == pytest.approx(1.2 * (int8_ms if ships_int8 else float_ms))
    assert manifest["outputs"]["model.onnx"]["sha256"] == manifest["artifacts"]["model.onnx"]["sha256"]
    # the deployed model's accuracy is the shipped file's, not the INT8 stage's
    final = manifest["stages"][-1]
    assert final["accuracy"] == pytest.approx(manifest["accuracy"]["output_accuracy"])
    if not ships_int8:
        assert final["accuracy"] == pytest.approx(manifest["stages"][0]["accuracy"]) and "float" in final["note"]
    report = (out / "report.md").read_text()
    assert "## Precision: INT8 or float" in report and decision["why"] in report


def test_session_file_reproduces_the_measured_settings(tmp_path):
    manifest = compress(TEACHER, target="cpu", out=tmp_path / "run", recipe="export", profile_spec=ProfileSpec(warmup=2, iterations=20))
    out = Path(manifest["out"])
    saved = json.loads((out / "model.session.json").read_text())
    chosen = manifest["latency"]["settings"]["chosen"]
    assert saved["settings"]["intra_op_num_threads"] == chosen["threads"] == manifest["latency"]["threads"]
    assert saved["settings"]["graph_optimization_level"] == {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED"}[chosen["optimization"]]
    spinning = saved["settings"]["session_config_entries"].get("session.intra_op.allow_spinning")
    assert spinning == (None if chosen["spinning"] is None else ("1" if chosen["spinning"] else "0"))
    assert manifest["artifacts"]["model.session.json"]["bytes"] == (out / "model.session.json").stat().st_size
    assert len(manifest["latency"]["settings"]["candidates"]) >= 2  # threads 1..cores x layout (x spinning)
    # the snippet the report shows runs as written, next to model.onnx, and builds that session
    snippet = saved["snippet"]
    assert snippet in (out / "report.md").read_text()
    cwd = os.getcwd()
    try:
        os.chdir(out)
        scope: dict = {}
        exec(compile(snippet, "model.session.json:snippet", "exec"), scope)  # our own generated code, not a model file's
    finally:
        os.chdir(cwd)
    session = scope["session"]
    x = np.zeros([1, *manifest["outputs"]["model.onnx"]["input_spec"]["shape"][1:]], dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape[-1] == 10
    assert scope["options"].intra_op_num_threads == chosen["threads"]
