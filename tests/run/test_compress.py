"""`squeeze compress` today: export -> profile through the pipeline runner, manifest + gate verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeeze import api
from squeeze.errors import UserInputError
from squeeze.io.fsutil import sha256_file
from squeeze.targets.base import ProfileSpec

ROOT = Path(__file__).resolve().parents[2]

TEACHER = Path(__file__).resolve().parents[2] / "samples" / "teachers" / "resnet_mnist.pt"
FAST = ProfileSpec(warmup=2, iterations=20)


def test_compress_sample_teacher_writes_model_and_manifest(tmp_path):
    out = tmp_path / "run"
    result = api.compress(TEACHER, target="cpu", out=out, recipe="export", profile_spec=FAST, latency_budget="10s", max_accuracy_drop=0.5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["gate"] == manifest["gate"] and manifest["gate"]["verdict"] == "pass"
    assert {c["check"] for c in manifest["gate"]["checks"]} == {"onnx_parity", "latency_p90_ms", "accuracy_drop_pct_points"}
    # Teacher accuracy on the real held-out MNIST split, next to the exported model's.
    acc = manifest["accuracy"]
    assert acc["samples"] == 2000 and acc["teacher_accuracy"] >= 0.98
    assert abs(acc["teacher_accuracy"] - acc["output_accuracy"]) <= 0.001 and acc["top1_agreement"] >= 0.999
    assert acc["teacher_accuracy"] == pytest.approx(manifest["teacher"]["recorded"]["eval_accuracy"])
    assert manifest["parity"]["passed"] and manifest["latency"]["providers"] == ["CPUExecutionProvider"]
    assert manifest["outputs"]["model.onnx"]["sha256"] == sha256_file(out / "model.onnx")
    assert manifest["teacher"]["sha256"] == sha256_file(TEACHER)
    assert 40e6 <= manifest["teacher"]["macs"] <= 150e6
    assert [p["name"] for p in manifest["passes"]] == ["export", "profile"]
    assert manifest["data"]["fingerprint"] and manifest["data"]["split"]["seed"] == 0
    for key in ("torch", "onnx", "onnxruntime", "python"):
        assert manifest["versions"][key]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.session.json", "report.html", "report.md", "teacher.onnx"]
    assert [s["stage"] for s in manifest["stages"]] == ["teacher", "final"]
    for stage in manifest["stages"]:
        assert stage["accuracy"] >= 0.98 and stage["teacher_agreement"] >= 0.999 and stage["latency"]["p90_ms"] > 0
    assert manifest["artifacts"]["teacher.onnx"]["sha256"] == sha256_file(out / "teacher.onnx")
    assert {r["op_type"] for r in manifest["layer_latency"]["final"]} >= {"Conv", "Gemm"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert out.stat().st_mode & 0o055 and (out / "model.onnx").stat().st_mode & 0o044  # not private temp-file modes


def test_onnx_macs_match_torch_count(tiny, tmp_path):
    result = api.compress(tiny.checkpoint, out=tmp_path / "run", recipe="export", profile_spec=FAST)
    assert result["outputs"]["model.onnx"]["macs"] == result["teacher"]["macs"] == 70720


def test_gate_failure_exits_1_but_keeps_artifacts(cli, tiny, tmp_path):
    out = tmp_path / "run"
    result = cli("compress", tiny.checkpoint, "--recipe", "export", "--out", out, "--latency-budget", "1us", "-n", "10", "--json")
    assert result.code == 1, result.stderr
    manifest = result.json()
    assert manifest["gate"]["verdict"] == "fail"
    failed = [c for c in manifest["gate"]["checks"] if not c["passed"]]
    assert [c["check"] for c in failed] == ["latency_p90_ms"] and failed[0]["limit"] == pytest.approx(0.001)
    assert (out / "model.onnx").exists() and (out / "manifest.json").exists()


def test_rerun_replaces_previous_output(tiny, tmp_path):
    out = tmp_path / "run"
    api.compress(tiny.checkpoint, out=out, recipe="export", profile_spec=FAST)
    first = json.loads((out / "manifest.json").read_text())["created_utc"]
    api.compress(tiny.checkpoint, out=out, recipe="export", profile_spec=FAST)
    assert json.loads((out / "manifest.json").read_text())["created_utc"] >= first
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.session.json", "report.html", "report.md", "teacher.onnx"]


def test_refuses_foreign_output_directory(tiny, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UserInputError, match="not a squeeze output directory"):
        api.compress(tiny.checkpoint, out=out, recipe="export", profile_spec=FAST)
    assert (out / "thesis.tex").read_text() == "precious"


def test_failed_run_leaves_no_output(tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserInputError):
        api.compress(tiny.checkpoint, out=out, recipe="export", data="digits", profile_spec=FAST)  # 8x8 data for a 28x28 model
    assert not out.exists() and not list(tmp_path.iterdir())


def test_accuracy_gate_needs_labels(tiny, tmp_path):
    import numpy as np

    data = tmp_path / "unlabelled.npz"
    np.savez(data, x=np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32))
    with pytest.raises(UserInputError, match="labelled dataset"):
        api.compress(tiny.checkpoint, out=tmp_path / "run", recipe="export", data=str(data), max_accuracy_drop=1.0, profile_spec=FAST)


@pytest.mark.parametrize("text, ms", [("2ms", 2.0), ("500us", 0.5), ("0.5s", 500.0), ("3", 3.0)])
def test_duration_parsing(text, ms):
    assert api.parse_duration_ms(text) == pytest.approx(ms)


def test_bad_duration():
    with pytest.raises(UserInputError, match="latency budget"):
        api.parse_duration_ms("fast")


def test_compress_with_student_distils_and_compares_to_teacher(tmp_path):
    spec = tmp_path / "student.json"
    spec.write_text(json.dumps({"arch": "squeeze.zoo:tiny_cnn", "kwargs": {"width": 16}}))
    digits_teacher = TEACHER.with_name("resnet_digits.pt")
    out = tmp_path / "run"
    result = api.compress(digits_teacher, out=out, recipe="distill", student=str(spec), distill_options={"epochs": 3}, profile_spec=FAST,
                          max_accuracy_drop=50.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["name"] for p in manifest["passes"]] == ["distill", "export", "profile"]
    assert [s["stage"] for s in manifest["stages"]] == ["teacher", "distill", "final"]
    assert manifest["stages"][1]["accuracy"] == pytest.approx(manifest["student"]["eval"]["student_accuracy"])
    assert manifest["outputs"]["model.onnx"]["macs"] == manifest["student"]["student"]["macs"] < manifest["teacher"]["macs"] / 100
    assert manifest["accuracy"]["output_accuracy"] == pytest.approx(manifest["student"]["eval"]["student_accuracy"], abs=0.003)
    assert manifest["teacher_latency"]["providers"] == ["CPUExecutionProvider"]
    # the speed-up is the median of per-round paired ratios, with its bootstrap interval; close to the ratio of medians
    low, high = manifest["speedup_ci95"]
    assert low <= manifest["speedup_p50"] <= high
    teacher_p50 = (manifest.get("speedup_basis") or {}).get("teacher_p50_ms", manifest["teacher_latency"]["p50_ms"])  # at the same settings
    assert 0.6 < manifest["speedup_p50"] / (teacher_p50 / manifest["latency"]["p50_ms"]) < 1.6
    assert manifest["speedup_tuned_p50"] <= manifest["speedup_p50"] * 1.1  # the teacher at its fastest is no slower than at ours
    assert manifest["measurement"]["rounds"] >= 5 and manifest["measurement"]["load"]["cores"] >= 1
    assert (out / "distill" / "student.pt").exists() and result["gate"]["verdict"] == "pass"
    strict = api.compress(digits_teacher, out=tmp_path / "strict", recipe="distill", student=str(spec), distill_options={"epochs": 1},
                          profile_spec=FAST, max_accuracy_drop=0.0)
    assert strict["gate"]["verdict"] == "fail"  # one epoch of a 5k-parameter student cannot match the teacher


def test_whole_chain_for_a_jetson_without_device_runs_on_predicted_latency(tmp_path):
    """The headline command (`--target jetson-orin-nano`, no device): search and prune steer by the
    target's roofline prediction, quantize keeps INT8 (predicted faster on the GPU), and every
    latency in the manifest is labelled as a prediction."""
    digits_teacher = TEACHER.with_name("resnet_digits.pt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "version: 1\npasses:\n"
        "  - search: {population: 4, iterations: 4, fewshot_top: 2, fewshot_steps: 10}\n"
        "  - distill: {epochs: 1}\n"
        "  - prune: {steps: 1, candidates: 1, recover_epochs: 0.1, final_epochs: 0.1}\n"
        "  - quantize: {epochs: 0}\n"
        "  - profile\n")
    result = api.compress(digits_teacher, target="jetson-orin-nano", out=tmp_path / "run", data="digits", recipe=recipe,
                          cache_dir=tmp_path / "cache")
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages) == ["teacher", "search", "distill", "prune", "quantize", "final"]
    assert all(s["latency"]["measured"] is False for s in stages.values())
    assert "derived" in result["budget"]["source"] and result["budget"]["latency_ms"] == pytest.approx(
        stages["teacher"]["latency"]["p50_ms"] / 4, rel=0.01)
    # the searched student aims at 2x the budget (prune follows) and prune does not make it slower
    assert stages["search"]["latency"]["p50_ms"] <= 2 * result["budget"]["latency_ms"] * 1.05
    assert stages["prune"]["latency"]["p50_ms"] <= stages["distill"]["latency"]["p50_ms"]
    assert stages["quantize"]["latency"]["p50_ms"] < stages["prune"]["latency"]["p50_ms"]  # INT8 on the GPU's tensor cores
    assert not (tmp_path / "run" / "model.engine").exists()


def test_gated_budget_is_aimed_at_with_a_p50_margin_and_search_gets_headroom():
    """The gate bounds p90, search/prune compare p50: a user's budget is aimed at below itself."""
    from squeeze.passes.search.pass_ import SEARCH_HEADROOM
    from squeeze.run import budget as budgets, pipeline
    from squeeze.run.recipe import pass_class, parse_recipe

    recipe = parse_recipe({"version": 1, "passes": ["search", "distill", "prune", "export", "profile"]}, "test")

    def aims(budget_ms):
        steps = [pipeline.Step(pass_class(s.name)(), s.config) for s in recipe.passes]
        budget = budgets.derive(budget_ms, {"p50_ms": 2.0}, steps)
        budgets.aim_passes(steps, budget)
        return budget, {s.pass_.name: s.config.latency_budget_ms for s in steps if hasattr(s.config, "latency_budget_ms")}

    budget, aim = aims(1.0)
    assert budget["gated"] and budget["passes_aim_p50_ms"] == pytest.approx(budgets.GATED_P50_MARGIN)
    assert budgets.GATED_P50_MARGIN < 1.0 and aim["prune"] == pytest.approx(budgets.GATED_P50_MARGIN)
    assert aim["search"] == pytest.approx(budgets.GATED_P50_MARGIN * SEARCH_HEADROOM)
    # no user budget: 1/4 of the teacher's p50 steers the passes as is (nothing is gated)
    budget, aim = aims(None)
    assert not budget.get("gated") and aim["prune"] == pytest.approx(0.5)


@pytest.mark.parametrize("form, extra, message", [
    ("torchscript", ("--recipe", "distill", "--student", "samples/students/tiny_cnn16.json", "--loss", "kd+fitnet"),
     "feature and relation losses need the teacher's layers"),
    ("torchscript", ("--recipe", "DISWOT_RECIPE"), "DisWOT cannot tap a TorchScript teacher's layers"),
], ids=["torchscript-feature-loss", "torchscript-diswot"])
def test_a_teacher_form_a_pass_cannot_use_is_refused_before_any_work(cli, tiny, tmp_path, form, extra, message):
    """Decided up front (issue 17): exit 2, one line, nothing written; a DisWOT search and feature hints take a .pt2, not
    TorchScript."""
    out = tmp_path / "run"
    teacher = tiny.pt2 if form == "pt2" else tiny.torchscript
    if "DISWOT_RECIPE" in extra:
        recipe = tmp_path / "diswot.yaml"
        recipe.write_text("version: 1\npasses:\n  - search: {proxy: diswot}\n  - distill\n  - export\n  - profile\n")
        extra = tuple(str(recipe) if a == "DISWOT_RECIPE" else a for a in extra)
    result = cli("compress", teacher, "--data", "mnist", "--out", out, *extra, cwd=ROOT)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("… ")]  # progress lines start with "… "
    assert result.code == 2 and len(errors) == 1 and message in errors[0], result.stderr
    assert "measuring the teacher" not in result.stderr  # refused before the teacher was measured
    assert not out.exists()


def test_a_pt2_teacher_goes_through_distill_and_int8_qad(cli, tiny, tmp_path):
    """A .pt2 module refuses .eval(): quantization-aware distillation from it must not call it (bench/formats.py found
    the traceback in the quick recipe's quantize pass)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - distill: {epochs: 1}\n  - quantize: {epochs: 1, train_samples: 256, fallback_to_float: true}\n"
                      "  - profile: {spec: {iterations: 20}}\n")
    out = tmp_path / "run"
    result = cli("compress", tiny.pt2, "--data", "mnist", "--recipe", recipe, "--student", "samples/students/tiny_cnn16.json",
                 "--out", out, cwd=ROOT)
    assert result.code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "quantize" in [s["stage"] for s in manifest["stages"]] and manifest["parity"]["passed"]  # QAD ran (INT8 or its float fallback)


def test_a_budget_relative_to_the_teacher_is_gated_on_the_same_rounds(tiny, tmp_path):
    """--latency-budget 0.5x: the output's p90 against the teacher's, both timed in the closing rounds, so a host that
    speeds up or slows down between the up-front measurement and the gate moves both. The export recipe ships the
    teacher itself: about 1.0x of it, inside 1.5x and outside 0.5x."""
    loose = api.compress(tiny.checkpoint, out=tmp_path / "loose", recipe="export", profile_spec=FAST, latency_budget="1.5x")
    tight = api.compress(tiny.checkpoint, out=tmp_path / "tight", recipe="export", profile_spec=FAST, latency_budget="0.5x")
    for manifest, limit, verdict in ((loose, 1.5, "pass"), (tight, 0.5, "fail")):
        (check,) = [c for c in manifest["gate"]["checks"] if c["check"] == "latency_p90_vs_teacher"]
        assert check["limit"] == limit and check["value"] == pytest.approx(manifest["latency"]["p90_ms"] / check["teacher_p90_ms"])
        assert 0.5 < check["value"] < 1.5 and manifest["gate"]["verdict"] == verdict
        assert manifest["budget"]["ratio"] == limit and "same closing rounds" in manifest["budget"]["source"]
        assert manifest["budget"]["latency_ms"] > 0  # the aim passes would take: the teacher's up-front p50 times the ratio
    assert api.print_recipe("export", latency_budget="0.5x").startswith("# --latency-budget 0.5x: the passes aim at 0.5 of the teacher's p50")
    with pytest.raises(UserInputError, match="relative latency budget must look like 0.5x"):
        api.compress(tiny.checkpoint, out=tmp_path / "bad", recipe="export", profile_spec=FAST, latency_budget="halfx")
