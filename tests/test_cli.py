"""The CLI as a user runs it: --json on every command, exit codes, one-line errors, no half files."""

from __future__ import annotations

import json
from pathlib import Path


TEACHER = Path(__file__).resolve().parent.parent / "samples" / "teachers" / "resnet_mnist.pt"


def assert_one_line_error(result, fragment: str, code: int = 2):
    assert result.code == code, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_help_lists_every_command_with_examples(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("compress", "inspect", "export", "profile", "targets"):
        assert command in result.stdout
    assert "Examples" in result.stdout and "squeeze compress" in result.stdout


def test_inspect_json(cli, tiny):
    result = cli("inspect", tiny.checkpoint, "--json")
    assert result.code == 0, result.stderr
    info = result.json()
    assert info["params"] == sum(p.numel() for p in tiny.module.parameters())
    # conv 1->8 3x3 s2 (8*14*14*9) + conv 8->16 3x3 s2 (16*7*7*8*9) + linear 16->10
    assert info["macs"] == 14112 + 56448 + 160
    assert info["input_spec"]["shape"] == [1, 1, 28, 28]
    assert [row["type"] for row in info["layers"]][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]


def test_inspect_human_output_on_sample_teacher(cli):
    result = cli("inspect", TEACHER)
    assert result.code == 0, result.stderr
    assert "MACs" in result.stdout and "recorded accuracy" in result.stdout and "stages.2.1.conv2" in result.stdout


def test_inspect_pt2_has_the_checkpoints_per_layer_table(cli, tiny):
    """A .pt2 never calls its submodules; its table comes from the graph and matches the checkpoint's."""
    program = cli("inspect", tiny.pt2, "--json")
    assert program.code == 0, program.stderr
    info = program.json()
    rows = info["layers"]
    assert [row["name"] for row in rows] == ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2", "2", "3", "4"]
    assert [row["type"] for row in rows][:3] == ["Conv2d", "BatchNorm2d", "ReLU"] and rows[-1]["type"] == "Linear"
    assert [row["macs"] for row in rows if row["macs"]] == [14112, 56448, 160]
    assert sum(row["macs"] for row in rows) == info["macs"] == 14112 + 56448 + 160
    assert sum(row["params"] for row in rows) == info["params"]
    assert rows[0]["output_shape"] == [1, 8, 14, 14] and rows[-1]["output_shape"] == [1, 10]
    assert rows == cli("inspect", tiny.checkpoint, "--json").json()["layers"]


def test_inspect_human_output_on_sample_pt2(cli):
    result = cli("inspect", TEACHER.with_suffix(".pt2"))
    assert result.code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "stages.2.1.conv2" in line)
    assert "Conv2d" in row and "1x128x7x7" in row and "147.46k" in row and "7.23M" in row


def test_export_then_profile_json(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    exported = cli("export", tiny.checkpoint, "--out", out, "--json")
    assert exported.code == 0, exported.stderr
    info = exported.json()
    assert out.exists() and info["path"] == str(out) and info["parity"]["passed"]
    assert info["opset"] >= 17 and len(info["sha256"]) == 64
    profiled = cli("profile", out, "--target", "cpu", "--json", "-n", "20", "--warmup", "2")
    assert profiled.code == 0, profiled.stderr
    stats = profiled.json()
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "cov", "runtime_version", "providers", "threads", "batch_size"):
        assert key in stats
    assert stats["providers"] == ["CPUExecutionProvider"] and stats["iterations"] == 20


def test_profile_accepts_torch_model(cli, tiny):
    result = cli("profile", tiny.pt2, "--json", "-n", "10", "--warmup", "1", "-b", "3")
    assert result.code == 0, result.stderr
    stats = result.json()
    assert stats["exported"]["parity"]["passed"] and stats["input_shape"] == [3, 1, 28, 28]


def test_targets_json(cli):
    result = cli("targets", "--json")
    assert result.code == 0
    rows = {row["name"]: row for row in result.json()}
    assert rows["cpu"]["available"] is True
    for name in ("cuda", "tensorrt", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"):
        assert rows[name]["available"] is False and rows[name]["reason"]


# --- bad input: one line, exit 2, nothing at the output path ------------------------------------


def test_missing_model(cli, tmp_path):
    out = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", tmp_path / "nope.pt", "--out", out), "not found")
    assert not out.exists()


def test_corrupt_and_truncated_model(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    cut = tmp_path / "cut.pt2"
    data = tiny.pt2.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    assert_one_line_error(cli("export", cut, "--out", out), "corrupt or truncated")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    assert_one_line_error(cli("export", junk, "--out", out), "unrecognised")
    assert not out.exists()


def test_pickle_without_trust(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", tiny.pickle, "--out", out, "--input-shape", "1x1x28x28"), "--trust-pickle")
    assert not out.exists()
    ok = cli("export", tiny.pickle, "--out", out, "--input-shape", "1x1x28x28", "--trust-pickle", "--json")
    assert ok.code == 0, ok.stderr
    assert out.exists() and ok.json()["parity"]["passed"]


def test_wrong_input_shape(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", tiny.state_dict, "--arch", "squeeze.zoo:tiny_cnn", "--input-shape", "1x3x28x28", "--out", out),
                          "does not fit the model")
    assert_one_line_error(cli("inspect", tiny.checkpoint, "--input-shape", "one-by-two"), "must look like 1x3x32x32")
    assert not out.exists()


def test_unknown_target(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(cli("compress", tiny.checkpoint, "--target", "tpu-v9", "--out", out), "unknown target 'tpu-v9'")
    assert_one_line_error(cli("profile", tiny.checkpoint, "--target", "tpu-v9"), "unknown target")
    assert not out.exists()


def test_unavailable_target_is_bad_input_not_a_number(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(cli("compress", tiny.checkpoint, "--target", "cuda", "--out", out), "can neither measure nor predict here")
    assert not out.exists()


def test_compress_for_a_jetson_without_device_predicts_and_labels_every_figure(cli, tiny, tmp_path):
    out = tmp_path / "run"
    result = cli("compress", tiny.checkpoint, "--recipe", "export", "--target", "jetson-orin-nano", "--out", out, "--latency-budget", "1s", "--json")
    assert result.code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["can_measure"] is False
    assert manifest["latency"]["measured"] is False and manifest["teacher_latency"]["measured"] is False
    assert all(stage["latency"]["measured"] is False for stage in manifest["stages"])
    latency_check = next(c for c in manifest["gate"]["checks"] if c["check"] == "latency_p90_ms")
    assert latency_check["measured"] is False  # the verdict says it rests on a prediction
    assert "(predicted)" in (out / "report.md").read_text()
    assert not (out / "model.engine").exists()  # an engine is only built on the device


def test_unreadable_dataset(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert_one_line_error(cli("export", tiny.checkpoint, "--out", out, "--data", bad), "cannot read dataset")
    assert_one_line_error(cli("export", tiny.checkpoint, "--out", out, "--data", tmp_path / "missing.npz"), "not found")
    assert not out.exists()


def test_output_in_missing_directory(cli, tiny, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.onnx"
    assert_one_line_error(cli("export", tiny.checkpoint, "--out", out), "output directory does not exist")
    assert_one_line_error(cli("compress", tiny.checkpoint, "--out", tmp_path / "no" / "run"), "parent does not exist")
    assert not (tmp_path / "no").exists()


def test_arch_factory_from_working_directory(tiny, tmp_path):
    """`--arch mymodels:make` finds ./mymodels.py when run through the installed console script."""
    import shutil
    import subprocess
    import sys

    (tmp_path / "mymodels.py").write_text("from squeeze.zoo import tiny_cnn\n\ndef make():\n    return tiny_cnn()\n")
    shutil.copy(tiny.state_dict, tmp_path / "weights.pt")
    script = Path(sys.executable).parent / "squeeze"
    proc = subprocess.run([str(script), "inspect", "weights.pt", "--arch", "mymodels:make", "--input-shape", "1x1x28x28", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "state_dict"


def test_inspect_onnx(cli, tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert cli("export", tiny.checkpoint, "--out", out).code == 0
    info = cli("inspect", out, "--json").json()
    assert info["format"] == "onnx" and info["macs"] == 14112 + 56448 + 160 and info["opset"] == 18
    assert info["ops"]["Conv"] == 2 and info["inputs"][0]["shape"][1:] == [1, 28, 28]


def test_empty_state_dict_is_bad_input(cli, tmp_path):
    import torch

    state = tmp_path / "empty_state.pt"
    torch.save({}, state)
    assert_one_line_error(cli("inspect", state, "--arch", "squeeze.zoo:tiny_cnn", "--input-shape", "1x1x28x28"), "not a model")


def test_internal_error_points_to_log(monkeypatch):
    """A bug (not bad input) exits 3 with a pointer to a traceback log, not a wall of text."""
    from typer.testing import CliRunner

    from squeeze import api
    from squeeze.cli import app

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(api, "list_targets", boom)
    result = CliRunner().invoke(app, ["targets"])
    assert result.exit_code == 3
    message = result.output.strip()
    assert message.startswith("internal error: RuntimeError: simulated bug") and "--debug" in message
    log = Path(message.split("traceback in ", 1)[1].split(";", 1)[0])
    assert "simulated bug" in log.read_text() and "Traceback" in log.read_text()
    log.unlink()
