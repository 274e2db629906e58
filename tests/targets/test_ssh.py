"""ssh:// target: a REAL remote ONNX Runtime profile over SSH (loopback sshd, this machine's venv Python as the remote Python)."""

from __future__ import annotations

import sys

import pytest

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.modelio import load_onnx
from squeeze.targets.remote.transport import RemoteCommandError
from squeeze.targets import get_target
from squeeze.targets.base import ProfileSpec
from squeeze.targets.ssh import SshTarget, SshTargetConfig


def ssh_target(sshd, **config):
    return SshTarget(f"ssh://{sshd.address}", SshTargetConfig(**{"remote_python": sys.executable, "work_base": str(sshd.root),
                                                                 "ssh": sshd.options(), **config}))


def test_remote_ort_profile_is_measured(sshd, tiny_onnx_path):
    stats = ssh_target(sshd).profile(load_onnx(tiny_onnx_path), ProfileSpec(batch_size=2, warmup=3, iterations=40, threads=1))
    d = stats.to_dict()
    assert d["measured"] is True and d["target"] == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert d["runtime"] == "onnxruntime" and d["providers"] == ["CPUExecutionProvider"] and d["threads"] == 1
    assert d["input_shape"] == [2, 1, 28, 28] and d["iterations"] == 40
    assert 0 < d["min_ms"] <= d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
    assert d["cov"] == pytest.approx(d["std_ms"] / d["mean_ms"])
    assert d["host"]["address"].endswith(f":{sshd.port}") and d["host"]["usable_cores"] >= 1
    assert sys.executable in d["options"]["remote_command"] and d["options"]["connect_attempts"][-1]["ok"]
    assert [p.name for p in sshd.root.iterdir() if p.name.startswith("squeeze.")] == []  # remote work dir removed


def test_remote_python_without_onnxruntime(sshd, tiny_onnx_path, tmp_path):
    bare = "/usr/bin/python3"
    with pytest.raises(RemoteCommandError, match="(numpy|onnxruntime) is not installed for /usr/bin/python3 .*--remote-python"):
        ssh_target(sshd, remote_python=bare).profile(load_onnx(tiny_onnx_path), ProfileSpec(iterations=2, warmup=0))


def test_missing_remote_python(sshd, tiny_onnx_path):
    with pytest.raises(RemoteCommandError, match="'/nonexistent/python' was not found .*--remote-python"):
        ssh_target(sshd, remote_python="/nonexistent/python").profile(load_onnx(tiny_onnx_path), ProfileSpec(iterations=2, warmup=0))


def test_registry_parses_ssh_urls():
    target = get_target("ssh://pi@board:2222")
    assert target.name == "ssh://pi@board:2222" and target.available().available
    assert not get_target("ssh").available().available
    with pytest.raises(UserInputError, match="device address must look like"):
        get_target("ssh://")
    with pytest.raises(UserInputError, match="no --device"):
        get_target("ssh://pi@board", device="x@y")
    with pytest.raises(TargetUnavailableError, match="needs an address"):
        get_target("ssh").profile(None, ProfileSpec())


def test_cli_profile_over_ssh(sshd, tiny_onnx_path, cli):
    result = cli("profile", tiny_onnx_path, "--target", f"ssh://{sshd.user}@127.0.0.1", "--port", str(sshd.port), "--identity-file", sshd.key,
                 "--known-hosts", sshd.known_hosts, "--remote-python", sys.executable, "-n", "20", "--warmup", "2", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["label"] == "measured" and data["measured"] and data["runtime"] == "onnxruntime" and data["iterations"] == 20


def test_cli_unreachable_device_is_one_line_exit_2(sshd, tiny_onnx_path, cli):
    result = cli("profile", tiny_onnx_path, "--target", f"ssh://{sshd.user}@127.0.0.1:{sshd.closed_port()}", "--identity-file", sshd.key,
                 "--known-hosts", sshd.known_hosts)
    assert result.code == 2 and "device unreachable: connection to" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
