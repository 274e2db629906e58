"""bench/compare.py's helpers: the verdicts it prints, its method cache, and the ORT PTQ baseline on the digits teacher."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module
    spec.loader.exec_module(module)
    return module


def _row(method: str, acc: float, p50: float, **extra):
    return {"method": method, "accuracy": acc, "agreement": acc, "params": 1000, "macs": 2_000_000, "onnx_bytes": 4096, "wall_s": 1.0,
            "latency_b1": {"p50_ms": p50, "p90_ms": p50 * 1.1}, "teacher_name": "t", "int8": False, **extra}


def test_dominance_is_pareto_with_a_latency_tolerance(compare):
    rows = [_row("teacher", 0.9945, 1.0), _row("ort-ptq", 0.9945, 0.6), _row("tp-prune50", 0.990, 0.40), _row("kd-small", 0.985, 0.10),
            _row("modelopt-ptq", 0.9950, 0.245), _row("squeeze@1/4", 0.9945, 0.25), _row("squeeze@1/8", 0.9900, 0.123),
            {"method": "nncf-ptq", "failed": "skipped"}]
    verdicts = {v["baseline"]: v for v in compare.dominance(rows)}
    assert verdicts["ort-ptq"]["dominated_by"] == ["squeeze@1/4"]  # same accuracy, much faster
    assert verdicts["tp-prune50"]["dominated_by"] == ["squeeze@1/4", "squeeze@1/8"]  # more accurate; as accurate and faster
    assert verdicts["kd-small"]["dominated_by"] == []  # faster than every squeeze point (beyond the 3% tolerance)
    assert verdicts["kd-small"]["faster_but_less_accurate"] == []
    # squeeze@1/4 is 2% slower (within the tolerance) but less accurate: no; squeeze@1/8 is faster but less accurate
    assert verdicts["modelopt-ptq"]["dominated_by"] == [] and verdicts["modelopt-ptq"]["faster_but_less_accurate"] == ["squeeze@1/8"]
    assert "nncf-ptq" not in verdicts and "teacher" not in verdicts

    target = compare.target_check(rows)
    by_method = {p["method"]: p for p in target["points"]}
    assert by_method["squeeze@1/8"]["speedup"] == pytest.approx(1.0 / 0.123)
    assert by_method["squeeze@1/8"]["drop_pt"] == pytest.approx(0.45)
    assert by_method["squeeze@1/8"]["met"] and not by_method["squeeze@1/4"]["met"] and target["met"]
    assert not compare.target_check(rows, speedup=9.0)["met"]


def test_table_shows_ratios_against_the_teacher_and_failed_rows(compare):
    rows = [_row("teacher", 0.99, 2.0), _row("squeeze@1/8", 0.985, 0.25), {"method": "nncf-ptq", "failed": "skipped: nncf not installed"}]
    lines = compare.format_table(rows).splitlines()
    squeeze_line = next(line for line in lines if line.startswith("squeeze@1/8"))
    assert "-0.50" in squeeze_line and " 8.00 " in squeeze_line
    assert any(line.startswith("nncf-ptq") and "skipped: nncf not installed" in line for line in lines)


def test_a_method_runs_once_per_key(compare, tmp_path):
    calls = []

    def produce(folder: Path):
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"onnx")
        return {"notes": "made"}

    first = compare.cached_method(tmp_path, "m", {"epochs": 1}, produce, lambda m: None)
    again = compare.cached_method(tmp_path, "m", {"epochs": 1}, produce, lambda m: None)
    other = compare.cached_method(tmp_path, "m", {"epochs": 2}, produce, lambda m: None)
    assert len(calls) == 2 and not first["cached"] and again["cached"] and not other["cached"]
    assert again["onnx"] == first["onnx"] and again["wall_s"] == first["wall_s"] and other["onnx"] != first["onnx"]


def test_ort_ptq_baseline_quantizes_the_digits_teacher_within_one_point(compare, tmp_path):
    from squeeze import api
    from squeeze.measure.analysis import onnx_summary
    from squeeze.io.modelio import load_model

    teacher = load_model(ROOT / "samples" / "teachers" / "resnet_digits.pt")
    bundle = api.open_data("digits", teacher)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "ptq").mkdir()
    compare.export_teacher(teacher, bundle, tmp_path / "teacher")
    record = compare.ort_ptq(tmp_path / "teacher" / "model.onnx", bundle, tmp_path / "ptq")
    rows = [{"method": "teacher", "onnx": str(tmp_path / "teacher" / "model.onnx")}, {"method": "ort-ptq", "onnx": str(tmp_path / "ptq" / "model.onnx")}]
    compare._score(rows, bundle, tmp_path / "teacher" / "model.onnx", lambda m: None)
    ops = onnx_summary(tmp_path / "ptq" / "model.onnx")["ops"]
    assert ops.get("QuantizeLinear", 0) > 10 and ops.get("DequantizeLinear", 0) > 10, ops
    assert rows[1]["int8"] and not rows[0]["int8"]
    assert rows[1]["accuracy"] >= rows[0]["accuracy"] - 0.01
    assert rows[1]["onnx_bytes"] < rows[0]["onnx_bytes"] / 3  # int8 weights
    assert "per-channel" in record["notes"]
