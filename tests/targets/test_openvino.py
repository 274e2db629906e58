"""openvino target: IR build with its manifest, measured latency with the cpu target's fields, session tuning,
the deploy snippet, per-layer times from OpenVINO's counters, and clear refusals. OpenVINO runs for real here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.fsutil import sha256_file
from squeeze.io.modelio import load_model, load_onnx
from squeeze.io.onnx_export import ExportConfig, export_onnx
from squeeze.targets import get_target
from squeeze.targets.base import ProfileSpec, TargetOptions

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ov") / "tiny.onnx"
    export_onnx(load_model(tiny.checkpoint), path, ExportConfig(parity_samples=8))
    return load_onnx(path)


@pytest.fixture(scope="module")
def built(tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov-build") / "model.engine"  # the name compress gives; the IR lands beside it
    return get_target("openvino").build(tiny_onnx, out)


def test_available_here_and_listed(cli):
    availability = get_target("openvino").available()
    assert availability.available and availability.reason.startswith(f"openvino {ov.__version__.split('-')[0]}")
    listed = {t["name"]: t for t in cli("targets", "--json").json()}
    assert listed["openvino"]["available"] is True and listed["openvino"]["quant_rules"]["backend"] == "nncf"


def test_unavailable_names_the_extra(monkeypatch):
    import squeeze.targets.openvino as target_module

    def missing():
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(target_module, "_ov", missing)
    monkeypatch.setattr(target_module, "_CORE", [])
    availability = target_module.OpenvinoTarget().available()
    assert not availability.available and "pip install 'squeeze[openvino]'" in availability.reason
    assert "\n" not in availability.reason


def test_build_writes_ir_and_manifest(built, tiny_onnx):
    xml = built.path
    assert xml.name == "model.xml" and xml.is_file() and xml.with_suffix(".bin").is_file()
    manifest = json.loads(xml.with_name("model.xml.manifest.json").read_text())
    assert manifest == built.manifest
    assert manifest["openvino_version"] == ov.__version__ and manifest["device"]["name"] == "CPU"
    assert manifest["onnx_sha256"] == tiny_onnx.sha256 and manifest["engine_sha256"] == sha256_file(xml) == built.sha256
    assert manifest["weights_sha256"] == sha256_file(xml.with_suffix(".bin"))
    assert manifest["input"]["shapes"] == {"static": [1, 1, 28, 28]}
    assert manifest["precision"]["inference_precision_hint"] == "f32"
    assert set(manifest["precision"]["layers_by_runtime_precision"]) == {"f32"}  # a float model runs in float
    parity = manifest["parity_vs_onnxruntime"]
    assert parity["enforced"] and parity["max_abs_diff"] <= parity["tolerance_max_abs"] and parity["top1_agreement"] == 1.0


def test_built_ir_runs_standalone_like_onnx_runtime(built, tiny_onnx):
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)
    got = ov.Core().compile_model(str(built.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0]
    session = ort.InferenceSession(str(tiny_onnx.path), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(got - ref).max() <= 1e-3 + 1e-4 * np.abs(ref).max()


def test_profile_fields_match_the_cpu_target(tiny_onnx):
    d = get_target("openvino").profile(tiny_onnx, ProfileSpec(batch_size=4, warmup=3, iterations=30, threads=1)).to_dict()
    cpu = get_target("cpu").profile(tiny_onnx, ProfileSpec(warmup=1, iterations=5, threads=1)).to_dict()
    assert set(d) == set(cpu)
    assert d["runtime"] == "openvino" and d["runtime_version"] == ov.__version__ and "CPU plugin" in d["providers"][0]
    assert d["batch_size"] == 4 and d["input_shape"] == [4, 1, 28, 28] and d["iterations"] == 30 and d["warmup"] == 3
    assert d["threads"] == 1 and d["options"]["INFERENCE_NUM_THREADS"] == 1 and d["options"]["compiled"]["INFERENCE_NUM_THREADS"] == "1"
    assert d["options"]["PERFORMANCE_HINT"] == "LATENCY" and d["options"]["compiled"]["NUM_STREAMS"] == "1"
    assert d["options"]["compiled"]["ENABLE_CPU_PINNING"] == "False"  # pinned threads stall on a shared host
    assert 0 < d["min_ms"] <= d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
    assert d["cov"] == pytest.approx(d["std_ms"] / d["mean_ms"]) and d["throughput_per_s"] == pytest.approx(4000 / d["mean_ms"])
    assert d["measured"] is True and d["host"]["usable_cores"] >= 1


def test_settings_candidates_and_deploy_snippet(built, tmp_path, monkeypatch):
    from squeeze.targets.ort_runtime import usable_cores

    target = get_target("openvino")
    assert [s.threads for s in target.settings_candidates(ProfileSpec(), "threads")] == list(range(1, usable_cores() + 1))
    assert {s.threads for s in target.settings_candidates(ProfileSpec(threads=1), "full")} == {1}  # pinned stays pinned
    deploy = target.deploy_settings(ProfileSpec(threads=1))
    assert deploy["settings"]["INFERENCE_NUM_THREADS"] == 1 and deploy["settings"]["PERFORMANCE_HINT"] == "LATENCY"
    for name in ("model.xml", "model.bin"):
        (tmp_path / name).write_bytes((built.path.parent / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    scope = {"x": np.zeros((1, 1, 28, 28), np.float32)}
    exec(deploy["snippet"], scope)  # the snippet a user runs: it compiles the IR at the measured settings
    assert scope["compiled"].get_property("INFERENCE_NUM_THREADS") == 1 and scope["logits"].shape == (1, 10)


@pytest.mark.serial  # two streams need two cores of our own: OpenVINO compiles one on a worker pinned to a core
def test_full_tuning_times_pinning_and_streams_and_the_choice_round_trips(tiny_onnx):
    from squeeze.run.closing import chosen_spec
    from squeeze.run.report import describe_settings

    target = get_target("openvino")
    full = target.settings_candidates(ProfileSpec(threads=2), "full")
    assert [s.settings() for s in full] == [
        {"threads": 2, "ENABLE_CPU_PINNING": False, "NUM_STREAMS": 1}, {"threads": 2, "ENABLE_CPU_PINNING": True, "NUM_STREAMS": 1},
        {"threads": 2, "ENABLE_CPU_PINNING": False, "NUM_STREAMS": 2}]
    assert len(target.settings_candidates(ProfileSpec(threads=1), "full")) == 2  # one thread: no second stream
    d = target.profile(tiny_onnx, full[2]).to_dict()
    assert d["options"]["compiled"]["NUM_STREAMS"] == "2" and d["options"]["settings"] == full[2].settings()
    pinned = target.profile(tiny_onnx, full[1]).to_dict()
    assert pinned["options"]["compiled"]["ENABLE_CPU_PINNING"] == "True"
    # what the measurer records as chosen comes back as the same spec, and the deploy file compiles at it
    spec = chosen_spec(ProfileSpec(), {"settings": {"chosen": full[2].settings()}})
    assert spec == full[2] and target.deploy_settings(spec)["settings"]["NUM_STREAMS"] == 2
    text = describe_settings(full[2].settings())
    assert text == "2 threads, ENABLE_CPU_PINNING False, NUM_STREAMS 2" and "graph optimisation" not in text


def test_layer_profile_from_openvino_counters(tiny_onnx):
    rows = get_target("openvino").layer_profile(tiny_onnx, ProfileSpec(threads=1, warmup=2), runs=10)
    assert rows and all({"name", "op_type", "mean_us", "share"} <= set(r) for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert [r["mean_us"] for r in rows] == sorted((r["mean_us"] for r in rows), reverse=True)
    assert any(r["op_type"] == "Convolution" for r in rows)


def test_static_batch_model_refuses_other_batch(tiny, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(load_model(tiny.checkpoint), path, ExportConfig(dynamic_batch=False, parity_samples=4))
    with pytest.raises(TargetUnavailableError, match="static batch"):
        get_target("openvino").profile(load_onnx(path), ProfileSpec(batch_size=2, iterations=2, warmup=0))


def test_options_refused_by_name():
    with pytest.raises(UserInputError, match="--device does not apply"):
        get_target("openvino", TargetOptions(device="pi@host"))
    with pytest.raises(UserInputError, match="--precision must be one of f32, bf16, f16"):
        get_target("openvino", TargetOptions(precision="int4"))
    assert get_target("openvino", TargetOptions(precision="bf16")).precision == "bf16"


def test_cli_bad_precision_is_exit_2(cli, tiny, tmp_path):
    bad = cli("profile", tiny.checkpoint, "--target", "openvino", "--precision", "int4")
    assert bad.code == 2 and "--precision must be one of" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_compress_export_recipe_ships_the_ir_with_every_file_hashed(tiny, tmp_path):
    from squeeze import api

    manifest = api.compress(tiny.checkpoint, target="openvino", out=tmp_path / "run", recipe="export",
                            profile_spec=ProfileSpec(warmup=2, iterations=20))
    out = tmp_path / "run"
    assert manifest["target"]["name"] == "openvino" and manifest["gate"]["verdict"] == "pass"
    for name in ("model.xml", "model.bin", "model.onnx", "model.session.json"):
        assert manifest["artifacts"][name]["sha256"] == sha256_file(out / name), name
    assert manifest["outputs"]["engine"]["path"] == "model.xml" and manifest["latency"]["runtime"] == "openvino"
    assert manifest["latency"]["measured"] and manifest["latency"]["settings"]["chosen"]["threads"] >= 1
    assert "compile_model('model.xml'" in manifest["deploy"]["snippet"]
    assert {row["op_type"] for row in manifest["layer_latency"]["final"]}  # OpenVINO's own counters


@pytest.mark.slow  # about 2 minutes on 2 cores, most of it compress's interleaved latency rounds
def test_compress_whole_chain_on_openvino_ships_int8_or_float_by_its_own_measurement(tmp_path):
    """Issue 21 end to end: search -> distill -> NNCF INT8 QAD -> IR, timed on OpenVINO, on real digits."""
    from squeeze import api

    recipe = tmp_path / "ov.yaml"
    recipe.write_text("version: 1\npasses:\n"
                      "  - search: {population: 4, iterations: 4, top_k: 2, fewshot_top: 2, profile_iterations: 10}\n"
                      "  - distill: {epochs: 4}\n"
                      "  - quantize: {epochs: 1, fallback_to_float: true}\n"
                      "  - profile: {spec: {iterations: 50}}\n")
    out = tmp_path / "run"
    teacher = Path(__file__).resolve().parents[2] / "samples" / "teachers" / "resnet_digits.pt"
    manifest = api.compress(teacher, target="openvino", out=out, data="digits", recipe=recipe)
    assert manifest["target"]["name"] == "openvino" and manifest["latency"]["runtime"] == "openvino"
    assert manifest["parity"]["passed"] and manifest["parity"]["target_runtime"]["passed"], manifest["parity"]
    assert (out / "model.xml").exists() and (out / "model.bin").exists(), sorted(p.name for p in out.iterdir())
    assert manifest["accuracy"]["output_accuracy"] >= 0.7  # real digits eval split, 4 epochs of KD (teacher 98.6 %; seen 0.81-0.9x)
    precision = manifest["precision"]
    assert precision["shipped"] in ("quantize", "distill") and precision["why"]  # decided on OpenVINO's own timing
    assert set(precision["candidates"]) == {"quantize (lower precision)", "distill (float)"}
    assert manifest["search"]["fewshot"]["steps"] == 50  # the default ranker's short run, scaled to digits' 1.3k images
