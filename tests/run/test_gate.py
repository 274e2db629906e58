"""`squeeze gate`: absolute budgets, baseline regression, ratio mode, JUnit output, bad input."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from squeeze import api, zoo
from squeeze.run import gate as gating
from squeeze.io.artifacts import InputSpec
from squeeze.errors import UserInputError
from squeeze.io.modelio import save_checkpoint
from squeeze.targets.base import ProfileSpec

FAST = ProfileSpec(warmup=2, iterations=30)
MNIST_SPEC = InputSpec((1, 1, 28, 28), normalization={"mean": [0.1307], "std": [0.3081]})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real compress run on a tiny model, plus a ~100x heavier reference ONNX for ratio mode."""
    d = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    small = zoo.tiny_cnn(width=8)
    big = zoo.tiny_cnn(width=128)
    save_checkpoint(small, d / "small.pt", arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 8}, input_spec=MNIST_SPEC)
    save_checkpoint(big, d / "big.pt", arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 128}, input_spec=MNIST_SPEC)
    api.compress(d / "small.pt", out=d / "run", recipe="export", profile_spec=FAST, data="mnist")
    api.export(d / "big.pt", d / "big.onnx", data="mnist")
    return d


def _copy_run(built: Path, dest: Path) -> Path:
    shutil.copytree(built / "run", dest)
    return dest / "manifest.json"


def test_absolute_budgets_pass_and_fail(cli, built, tmp_path):
    manifest = built / "run" / "manifest.json"
    ok = cli("gate", manifest, "--max-latency-ms", "10s", "--max-accuracy-drop", "100", "--max-size-mb", "1", "--json")
    assert ok.code == 0, ok.stderr
    result = ok.json()
    assert result["verdict"] == "pass"
    assert {c["check"] for c in result["checks"]} == {"latency_p90_ms", "accuracy_drop_pct_points", "onnx_size_mb", "onnx_parity",
                                                       "compress_verdict"}
    p50 = cli("gate", manifest, "--max-latency-ms", "1us", "--percentile", "50", "--json")
    assert p50.code == 1
    failed = [c for c in p50.json()["checks"] if not c["passed"]]
    assert [c["check"] for c in failed] == ["latency_p50_ms"]
    assert failed[0]["value"] == pytest.approx(json.loads(manifest.read_text())["latency"]["p50_ms"])
    # The "teacher" here is the tiny model itself, so the accuracy drop is 0 and a 0-point budget passes...
    assert api.gate(manifest, max_accuracy_drop=0)["verdict"] == "pass"
    # ...and a size budget below the file's size fails.
    assert api.gate(manifest, max_size_mb=0.0001)["verdict"] == "fail"


def test_junit_output(cli, built, tmp_path):
    junit = tmp_path / "gate.xml"
    result = cli("gate", built / "run", "--max-latency-ms", "1us", "--max-size-mb", "1", "--junit", junit)
    assert result.code == 1
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite.get("failures") == "1" and suite.get("tests") == "4"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["latency_p90_ms"].find("failure") is not None
    assert cases["onnx_size_mb"].find("failure") is None and cases["onnx_parity"].find("failure") is None
    assert "latency_p90_ms: value" in cases["latency_p90_ms"].find("failure").get("message")


def test_baseline_regression_absolute_and_relative(built, tmp_path):
    manifest = _copy_run(built, tmp_path / "now")
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    now = json.loads(manifest.read_text())
    now.pop("teacher_latency", None)  # without the teacher timed in both runs, the comparison is absolute
    manifest.write_text(json.dumps(now))
    base = json.loads(json.dumps(now))
    base["latency"]["p90_ms"] = now["latency"]["p90_ms"] / 2  # the baseline was twice as fast
    (base_dir / "manifest.json").write_text(json.dumps(base))
    result = api.gate(manifest, baseline=base_dir / "manifest.json", max_regression="10%")
    check = next(c for c in result["checks"] if c["check"] == "latency_p90_regression")
    assert result["verdict"] == "fail" and check["value"] == pytest.approx(1.0) and check["mode"] == "absolute"
    assert api.gate(manifest, baseline=base_dir / "manifest.json", max_regression="150%")["verdict"] == "pass"

    # With the teacher timed in both runs, a uniformly slower runner is not a regression.
    now["teacher_latency"] = {k: 4 * now["latency"][k] for k in ("p50_ms", "p90_ms", "p99_ms")}
    base["teacher_latency"] = {k: 4 * base["latency"][k] for k in ("p50_ms", "p90_ms", "p99_ms")}
    manifest.write_text(json.dumps(now))
    (base_dir / "manifest.json").write_text(json.dumps(base))
    result = api.gate(manifest, baseline=base_dir / "manifest.json", max_regression="5%")
    check = next(c for c in result["checks"] if c["check"] == "latency_p90_regression")
    assert result["verdict"] == "pass" and check["value"] == pytest.approx(0.0) and "teacher" in check["mode"]

    base["accuracy"]["output_accuracy"] = now["accuracy"]["output_accuracy"] + 0.02
    (base_dir / "manifest.json").write_text(json.dumps(base))
    result = api.gate(manifest, baseline=base_dir / "manifest.json", max_accuracy_regression=1.0)
    check = next(c for c in result["checks"] if c["check"] == "accuracy_regression_pct_points")
    assert result["verdict"] == "fail" and check["value"] == pytest.approx(2.0)


def test_baseline_on_another_target_is_refused(built, tmp_path):
    manifest = _copy_run(built, tmp_path / "now")
    other = json.loads(manifest.read_text())
    other["target"]["name"] = "jetson-orin-nano"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(UserInputError, match="not comparable"):
        api.gate(manifest, baseline=tmp_path / "other.json", max_regression=0.1)


def test_ratio_mode_measures_interleaved_for_real(built):
    manifest = built / "run" / "manifest.json"
    result = api.gate(manifest, reference=built / "big.onnx", max_latency_ratio=0.8, time_cap_s=8, ratio_ci=0.05)
    ratio = result["ratio"]
    assert result["verdict"] == "pass", ratio
    assert ratio["rounds"] >= 3 and len(ratio["model_ms"]) == len(ratio["reference_ms"]) == ratio["rounds"]
    assert ratio["ci95"][0] <= ratio["ratio"] <= ratio["ci95"][1] and ratio["ratio"] < 0.8
    # The heavy model as the reference of itself: a ratio near 1 fails a 0.5 budget.
    same = api.gate(manifest, reference=built / "run" / "model.onnx", max_latency_ratio=0.5, time_cap_s=4, ratio_ci=0.05)
    assert same["verdict"] == "fail" and 0.6 < same["ratio"]["ratio"] < 1.6


def test_ratio_loop_stops_when_ci_is_tight_or_time_is_up(built):
    manifest = gating.load_manifest(built / "run" / "manifest.json")
    calls = []

    def measure(art):
        calls.append(art)
        return {"p90_ms": 1.0 if str(art.path).endswith("model.onnx") else 4.0}

    cfg = gating.GateConfig(reference=built / "big.onnx", max_latency_ratio=0.5, min_rounds=6)
    result = gating.measure_ratio(manifest, cfg, measure=measure)
    assert result["ratio"] == pytest.approx(0.25) and result["tight"] and result["rounds"] == 6
    assert [Path(a.path).name for a in calls[:4]] == ["model.onnx", "big.onnx", "big.onnx", "model.onnx"]  # ABBA

    rng = iter(range(10_000))

    def noisy(art):
        i = next(rng)
        return {"p90_ms": (1.0 + (i % 7)) if str(art.path).endswith("model.onnx") else 2.0}

    cfg = gating.GateConfig(reference=built / "big.onnx", ratio_ci=0.001, time_cap_s=0.05, min_rounds=3)
    result = gating.measure_ratio(manifest, cfg, measure=noisy)
    assert not result["tight"] and result["rounds"] >= 3


def test_bad_input_exits_2(cli, built, tmp_path):
    junit_dir = cli("gate", built / "run", "--max-latency-ms", "1", "--junit", tmp_path / "missing" / "g.xml")
    assert junit_dir.code == 2 and "output directory does not exist" in junit_dir.stderr and not (tmp_path / "missing").exists()
    manifest = built / "run" / "manifest.json"
    with pytest.raises(UserInputError, match="manifest not found"):
        api.gate(tmp_path / "nope.json", max_latency_ms=1)
    with pytest.raises(UserInputError, match="nothing to gate on"):
        api.gate(manifest)
    with pytest.raises(UserInputError, match="needs --reference"):
        api.gate(manifest, max_latency_ratio=0.5)
    with pytest.raises(UserInputError, match="need --baseline"):
        api.gate(manifest, max_regression="10%")
    not_manifest = tmp_path / "x.json"
    not_manifest.write_text("{}")
    with pytest.raises(UserInputError, match="not a squeeze manifest"):
        api.gate(not_manifest, max_latency_ms=1)
    with pytest.raises(UserInputError, match="--percentile"):
        api.gate(manifest, max_latency_ms=1, percentile=75)
    with pytest.raises(UserInputError, match="fraction like 10%"):
        api.gate(manifest, baseline=manifest, max_regression="lots")


def test_tampered_model_and_predicted_latency_are_refused(built, tmp_path):
    manifest = _copy_run(built, tmp_path / "run")
    (tmp_path / "run" / "model.onnx").write_bytes(b"changed")
    with pytest.raises(UserInputError, match="does not match the sha256"):
        api.gate(manifest, reference=built / "big.onnx", max_latency_ratio=1.0)
    predicted = json.loads(manifest.read_text())
    predicted["latency"]["measured"] = False
    manifest.write_text(json.dumps(predicted))
    with pytest.raises(UserInputError, match="predicted, not measured"):
        api.gate(manifest, max_latency_ms=100)
    assert api.gate(manifest, max_latency_ms=100, allow_predicted=True)["verdict"] == "pass"
