"""Jetson runner over a real SSH connection to a fake device (loopback sshd + stand-in NVIDIA tools).

Real here: SSH, host-key checking, file copies both ways, remote commands, df, clean-up, module
detection from device-tree files, nvpmodel/jetson_clocks parsing, trtexec command lines, parsing
of documented-format trtexec outputs, engine manifests. Not real: trtexec, nvpmodel, the GPU.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from jetson_device import calls, device_config, make_device
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.modelio import load_onnx
from squeeze.targets.remote.transport import DiskFullError, RemoteCommandError
from squeeze.targets import get_target
from squeeze.targets.base import ProfileSpec
from squeeze.targets.jetson import (
    MODULES,
    JetsonTarget,
    detect_module,
    jetpack_from_l4t,
    parse_clocks,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    parse_tegra_release,
)
from squeeze.targets.engine import manifest_path
from squeeze.targets.trtexec import EngineBuildOptions, EngineMismatchError, TensorRTError, TrtexecMissingError

SPEC = ProfileSpec(batch_size=1, warmup=0, iterations=50)


@pytest.fixture
def onnx_art(tiny_onnx_path):
    return load_onnx(tiny_onnx_path)


def jetson(root, sshd, tmp_path, name="jetson-orin-nano", **overrides) -> JetsonTarget:
    return JetsonTarget(name, sshd.address, device_config(root, sshd, tmp_path / "calibration.json", **overrides))


def test_profile_on_orin_nano_trt10(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev")
    stats = jetson(root, sshd, tmp_path).profile(onnx_art, SPEC)
    computes = sorted(r["computeMs"] for r in json.loads((Path(__file__).parent / "fixtures" / "trtexec" / "times_10.3.json").read_text()))
    assert stats.measured and stats.runtime == "tensorrt" and stats.runtime_version == "10.3.0"
    assert stats.iterations == len(computes) == 60
    assert stats.p50_ms == pytest.approx((computes[29] + computes[30]) / 2)
    assert stats.p90_ms == computes[60 - 1 - int(0.1 * 60)]  # trtexec's nearest-rank rule
    assert stats.min_ms == computes[0] and stats.max_ms == computes[-1]
    assert stats.layers[0]["name"].startswith("/features/features.3/Conv") and stats.layers[0]["average_ms"] == 0.112
    host = stats.host
    assert host["module"] == "Orin Nano 8GB" and host["l4t"] == "36.4.3" and host["jetpack"] == "6.2"
    assert host["gpu"] == "Orin" and host["sm"] == "8.7" and host["power_mode"] == {"name": "15W", "id": 0}
    assert host["clocks"]["locked"] is False and "clock_warning" in stats.options
    assert stats.options["trtexec_summary"]["GPU Compute Time"]["median"] == 0.3188
    assert "coefficient of variance" in stats.options["unstable"]
    build, profile = [c for c in calls(root) if "--help" not in c]
    assert "--stronglyTyped" in build and "--skipInference" in build and not {"--fp16", "--int8"} & set(build)
    assert f"--timingCacheFile={root}/cache/timing-jetson-orin-nano-trt10.3.0.cache" in build
    assert [a for a in build if "Shapes=" in a] == ["--minShapes=input:1x1x28x28", "--optShapes=input:1x1x28x28", "--maxShapes=input:32x1x28x28"]
    assert {"--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"} <= set(profile)
    assert "--warmUp=2000" in profile and "--duration=10" in profile and "--iterations=50" in profile and "--shapes=input:1x1x28x28" in profile
    assert list((root / "work").iterdir()) == []  # the remote work dir is gone
    assert (root / "cache" / "timing-jetson-orin-nano-trt10.3.0.cache").exists()  # the timing cache stays for the next build


def test_profile_on_agx_orin_trt11_uses_11x_flags(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", kind="agx-orin-64", trt="11.4")
    stats = jetson(root, sshd, tmp_path, name="jetson").profile(onnx_art, ProfileSpec(batch_size=4, warmup=0, iterations=20))
    assert stats.target == "jetson-agx-orin" and stats.runtime_version == "11.4.0" and stats.host["jetpack"] == "7.2"
    build, profile = [c for c in calls(root) if "--help" not in c]
    removed = {"--stronglyTyped", "--fp16", "--int8", "--best", "--useCudaGraph", "--noDataTransfers", "--separateProfileRun", "--useSpinWait"}
    assert not removed & set(build) and not removed & set(profile)
    assert "--shapes=input:4x1x28x28" in profile and "--optShapes=input:4x1x28x28" in build
    assert stats.options["measurement"]["cuda_graph"] is True and stats.options["measurement"]["data_transfers"] is False


def test_fp16_flag_refused_on_trt11_before_building(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", kind="agx-orin-64", trt="11.4")
    target = jetson(root, sshd, tmp_path, name="jetson-agx-orin", build=EngineBuildOptions(precision="fp16"))
    with pytest.raises(TensorRTError, match="TensorRT 11.4.0 removed the --fp16 builder flag"):
        target.profile(onnx_art, SPEC)
    assert [c for c in calls(root) if "--help" not in c] == []
    assert list((root / "work").iterdir()) == []


def test_fp16_on_trt10_passes_the_flag(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev")
    jetson(root, sshd, tmp_path, build=EngineBuildOptions(precision="fp16")).profile(onnx_art, SPEC)
    build = [c for c in calls(root) if "--help" not in c][0]
    assert "--fp16" in build and "--stronglyTyped" not in build


def test_wrong_module_is_refused(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", kind="agx-orin-64")
    with pytest.raises(UserInputError, match="is a Jetson AGX Orin 64GB .* not the Orin Nano 8GB .* use --target jetson-agx-orin"):
        jetson(root, sshd, tmp_path).profile(onnx_art, SPEC)


def test_not_a_jetson(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", kind="raspberry-pi")
    with pytest.raises(TargetUnavailableError, match="does not look like a Jetson Orin.*Raspberry Pi.*--target ssh://"):
        jetson(root, sshd, tmp_path, name="jetson").profile(onnx_art, SPEC)


def test_missing_trtexec(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", with_trtexec=False)
    with pytest.raises(TrtexecMissingError, match=r"trtexec not found at .*/bin/trtexec on .*--trtexec PATH"):
        jetson(root, sshd, tmp_path).profile(onnx_art, SPEC)
    assert list((root / "work").iterdir()) == []


def test_parser_errors_are_shown(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", mode="parse_error")
    with pytest.raises(TensorRTError, match="ONNX parser rejected the model.*No importer registered for op: NonMaxSuppression") as info:
        jetson(root, sshd, tmp_path).profile(onnx_art, SPEC)
    assert "Failed to parse onnx file" in str(info.value)
    assert list((root / "work").iterdir()) == []


def test_power_mode_is_set_and_recorded(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", power_id=0)
    stats = jetson(root, sshd, tmp_path, power_mode="maxn_super").profile(onnx_art, SPEC)
    assert stats.host["power_mode"] == {"name": "MAXN_SUPER", "id": 2}
    assert stats.host["power_mode_before"] == {"name": "15W", "id": 0}
    assert (root / "bin" / "nvpmodel.state").read_text().strip() == "2"


def test_power_mode_refusals(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev", power_id=0)
    (root / "bin" / "deny").touch()
    with pytest.raises(RemoteCommandError, match="cannot set power mode 25W .*sudo needs a password.*sudo nvpmodel -m 1"):
        jetson(root, sshd, tmp_path, power_mode="25W").profile(onnx_art, SPEC)
    (root / "bin" / "deny").unlink()
    (root / "bin" / "needs-reboot").touch()
    with pytest.raises(RemoteCommandError, match="needs a reboot"):
        jetson(root, sshd, tmp_path, power_mode="MAXN_SUPER").profile(onnx_art, SPEC)
    with pytest.raises(UserInputError, match="power mode 'TURBO' is not defined .*0=15W, 1=25W, 2=MAXN_SUPER, 3=7W"):
        jetson(root, sshd, tmp_path, power_mode="TURBO").profile(onnx_art, SPEC)


def test_build_engine_with_manifest_then_refuse_on_other_device(sshd, tmp_path, onnx_art):
    nano = make_device(tmp_path / "nano")
    out = tmp_path / "model.engine"
    jetson(nano, sshd, tmp_path).build(onnx_art, out)
    assert out.read_bytes().startswith(b"FAKE-ENGINE:")
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["tensorrt_version"] == "10.3.0" and manifest["gpu"] == "Orin" and manifest["sm"] == "8.7"
    assert manifest["module"] == "Orin Nano 8GB" and manifest["jetpack"] == "6.2" and manifest["power_mode"]["name"] == "15W"
    assert manifest["precision"] == "strongly-typed" and manifest["onnx_sha256"] == onnx_art.sha256
    assert manifest["input"]["shapes"] == {"min": [1, 1, 28, 28], "opt": [1, 1, 28, 28], "max": [32, 1, 28, 28]}
    assert "--saveEngine=" in manifest["build_command"] and manifest["layer_info"]["Layers"]
    # the same engine measures on the device that built it ...
    stats = jetson(nano, sshd, tmp_path).profile(out, SPEC)
    assert stats.options["engine"]["file"] == str(out) and stats.options["build_command"] is None
    assert any(a.startswith("--loadEngine=") for a in calls(nano)[-1])
    # ... and is refused on one in another power mode, and on another module/TensorRT, with the rebuild command
    (nano / "bin" / "nvpmodel.state").write_text("1\n")
    with pytest.raises(EngineMismatchError, match=r"power mode 15W -> 25W.*Rebuild: squeeze build .*tiny.onnx --target jetson-orin-nano"):
        jetson(nano, sshd, tmp_path).profile(out, SPEC)
    agx = make_device(tmp_path / "agx", kind="agx-orin-64", trt="11.4")
    with pytest.raises(EngineMismatchError, match=r"tensorrt version 10.3.0 -> 11.4.0.*module Orin Nano 8GB -> AGX Orin 64GB.*--target jetson-agx-orin"):
        jetson(agx, sshd, tmp_path, name="jetson").profile(out, SPEC)
    assert [c for c in calls(agx) if "--help" not in c] == []  # nothing was run on the wrong device
    with pytest.raises(UserInputError, match="was built for batch up to 32; rebuild it"):
        jetson(nano, sshd, tmp_path).profile(out, ProfileSpec(batch_size=64, iterations=2))
    # a tampered engine is refused before anything connects
    out.write_bytes(out.read_bytes() + b"x")
    with pytest.raises(EngineMismatchError, match="does not match its manifest"):
        jetson(nano, sshd, tmp_path).profile(out, SPEC)


def test_measurement_calibrates_later_predictions(sshd, tmp_path, onnx_art):
    root = make_device(tmp_path / "dev")
    offline = JetsonTarget("jetson-orin-nano", None, device_config(root, sshd, tmp_path / "calibration.json"))
    before = offline.predict(onnx_art, SPEC)
    assert before.options["calibration"]["calibrated"] is False
    measured = jetson(root, sshd, tmp_path).profile(onnx_art, SPEC)
    after = offline.predict(onnx_art, SPEC)
    cal = after.options["calibration"]
    assert cal["calibrated"] and cal["measurements"] == 1 and cal["power_modes"] == ["15W"]
    assert after.p50_ms == pytest.approx(measured.p50_ms)  # one stored measurement of the same model: calibrated onto it
    assert after.options["raw_predicted_ms"] == pytest.approx(before.p50_ms)


def mount_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_disk_full_on_a_real_small_filesystem(sshd, tmp_path, onnx_art):
    """A real tmpfs as the device's work area: the ONNX fits, the engine does not (ENOSPC from the kernel)."""
    root = make_device(tmp_path / "dev", engine_factor=64)
    small = root / "small"
    size = Path(onnx_art.path).stat().st_size
    if not mount_tmpfs(small, math.ceil(3 * size / 1024) + 64):
        pytest.skip("mounting a tmpfs needs root (CI runs as root); the ENOSPC string path is covered in tests/test_remote.py")
    try:
        with pytest.raises(DiskFullError, match="disk full on .* during engine build"):
            jetson(root, sshd, tmp_path, work_base=str(small), min_free_mb=0).profile(onnx_art, SPEC)
        with pytest.raises(DiskFullError, match=r"needs about .* MB .* only .* MB free"):
            jetson(root, sshd, tmp_path, work_base=str(small), min_free_mb=512).profile(onnx_art, SPEC)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


# -- offline pieces ------------------------------------------------------------------------


@pytest.mark.parametrize("model, compatible, mem, expected", [
    ("NVIDIA Jetson Orin Nano Developer Kit", ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"], 7650336, "jetson-orin-nano"),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit", ["nvidia,p3767-0004"], 3500000, "jetson-orin-nano-4gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ["nvidia,p3767-0000"], 15500000, "jetson-orin-nx"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ["nvidia,p3767-0001"], 7600000, "jetson-orin-nx-8gb"),
    ("NVIDIA Jetson AGX Orin Developer Kit", ["nvidia,p3701-0005"], 64000000, "jetson-agx-orin"),
    ("NVIDIA Jetson AGX Orin Developer Kit", ["nvidia,p3701-0000"], 30000000, "jetson-agx-orin-32gb"),
    ("NVIDIA Jetson AGX Orin", [], 30000000, "jetson-agx-orin-32gb"),  # no SKU: model string + memory
    ("Raspberry Pi 5 Model B", ["raspberrypi,5-model-b"], 8000000, None),
])
def test_detect_module(model, compatible, mem, expected):
    assert detect_module(model, compatible, mem) == expected


def test_device_text_parsers():
    assert parse_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic") == "36.4.3"
    assert jetpack_from_l4t("36.4.3") == "6.2" and jetpack_from_l4t("35.5.0") == "5.1" and jetpack_from_l4t("99.1") is None
    assert parse_nvpmodel_query("NVPM WARN: x\nNV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel_query("nvpmodel: command not found") is None
    assert parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=MAXN >\nX\n< POWER_MODEL ID=1 NAME=MODE_15W >") == {0: "MAXN", 1: "MODE_15W"}
    clocks = parse_clocks("GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000\nEMC MinFreq=1 MaxFreq=2 CurrentFreq=2 FreqOverride=1")
    assert clocks["locked"] and clocks["emc"]["max_hz"] == 2


def test_module_figures_match_the_data_sheets():
    """GPU-only peaks derived from tensor cores x clock reproduce the published figures."""
    nano = MODULES["jetson-orin-nano"]
    assert nano.hardware().int8_tops * 2 == pytest.approx(nano.int8_sparse_tops, rel=0.03)  # no DLA: GPU sparse == headline
    assert nano.hardware("MAXN_SUPER").int8_tops * 2 == pytest.approx(nano.int8_sparse_tops_super, rel=0.03)
    assert MODULES["jetson-orin-nano-4gb"].hardware().int8_tops * 2 == pytest.approx(20, rel=0.03)
    assert MODULES["jetson-agx-orin"].hardware().int8_tops * 2 == pytest.approx(170, rel=0.03)  # AGX Orin brief: 170 sparse from the GPU
    for module in MODULES.values():
        gpu_sparse = module.hardware().int8_tops * 2
        assert gpu_sparse <= module.int8_sparse_tops * 1.03 and module.sm == "8.7"
    assert nano.hardware("MAXN_SUPER").bandwidth_gbs == 102 and nano.hardware("15W").bandwidth_gbs == 68


def test_registry_jetson_alias_without_device_assumes_nano(tiny_onnx_path):
    target = get_target("jetson")
    assert not target.available().available and "assuming Orin Nano 8GB" in target.available().reason
    stats = target.predict(load_onnx(tiny_onnx_path), SPEC)
    assert stats.target == "jetson-orin-nano" and stats.options["assumed"].startswith("no --device: assumed Jetson Orin Nano 8GB")
    assert not stats.measured and stats.options["label"] == "predicted"
    commands = stats.options["on_device_commands"]
    assert commands[1].startswith("/usr/src/tensorrt/bin/trtexec --onnx=tiny.onnx --saveEngine=model.engine --skipInference")
    assert "--stronglyTyped" in commands[1] and "--loadEngine=model.engine" in commands[2]


def test_build_without_device_explains(tiny_onnx_path, tmp_path):
    with pytest.raises(TargetUnavailableError, match="needs the device.*--device user@host.*trtexec --onnx="):
        get_target("jetson-orin-nx").build(load_onnx(tiny_onnx_path), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_cli_profile_without_device_is_labelled_prediction(tiny_onnx_path, cli):
    result = cli("profile", tiny_onnx_path, "--target", "jetson", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["label"] == "predicted" and data["measured"] is False and data["options"]["label"] == "predicted"
    assert data["target"] == "jetson-orin-nano" and "no --device" in data["why_predicted"]
    table = cli("profile", tiny_onnx_path, "--target", "jetson-orin-nano")
    assert table.code == 0 and "PREDICTED, not measured" in table.stdout and "PREDICTED latency" in table.stdout
    assert "/usr/src/tensorrt/bin/trtexec --onnx=tiny.onnx --saveEngine=model.engine" in table.stdout


def test_cli_build_tensorrt_without_gpu_explains_and_writes_nothing(tiny_onnx_path, tmp_path, cli):
    result = cli("build", tiny_onnx_path, "--target", "tensorrt", "--out", tmp_path / "m.engine")
    assert result.code == 2 and "cannot build an engine with TensorRT here" in result.stderr and "would run: trtexec --onnx=" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_for_onnx_runtime_targets_is_refused(tiny_onnx_path, tmp_path):
    from squeeze import api

    for target in ("cpu", "ssh://pi@board"):
        with pytest.raises(UserInputError, match="no engine to build"):
            api.build(tiny_onnx_path, tmp_path / "m.engine", target=target)
    assert list(tmp_path.iterdir()) == []
