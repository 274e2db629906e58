"""A real OpenSSH server on loopback for the remote targets' tests (ssh://, jetson-* runner).

The server runs as the current user from a throw-away directory: generated host and user keys,
its own sshd_config on a free high port, key auth only, and a known_hosts file written from the
host key, so host-key checking stays on exactly as in production. `.ci/run` and `make test`
install openssh-server when /usr/sbin/sshd is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key: Path  # private key accepted by the server
    known_hosts: Path  # holds the server's real host key
    root: Path

    @staticmethod
    def closed_port() -> int:
        return free_port()

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def options(self, **overrides):
        from squeeze.targets.remote.transport import SshOptions

        base = {"identity_file": str(self.key), "known_hosts": str(self.known_hosts), "connect_timeout_s": 15.0,
                "retries": 2, "backoff_s": 0.05, "ssh_config": str(self.root / "no-ssh-config")}
        return SshOptions(**{**base, **overrides})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "squeeze-test", "-f", str(path)], check=True)


def _wait_for_banner(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sshd did not answer in time")


@pytest.fixture(scope="session", autouse=True)
def _private_calibration_store(tmp_path_factory):
    """Predictions in tests must not read (or write) the developer's ~/.cache/squeeze calibration file."""
    os.environ["SQUEEZE_CALIBRATION_FILE"] = str(tmp_path_factory.mktemp("calibration") / "latency-calibration.json")
    yield
    os.environ.pop("SQUEEZE_CALIBRATION_FILE", None)


def start_sshd(root: Path) -> tuple[SshServer, subprocess.Popen]:
    """Keys, config and a running `sshd -D` in `root` (as the current user, loopback only). Also used by bench/."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing: install openssh-server (apt-get install -y openssh-server); .ci/run and make test do")
    os.chmod(root, 0o755)
    _keygen(root / "host_key")
    _keygen(root / "user_key")
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on when root
    import getpass

    for _ in range(5):
        port = free_port()
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}", f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50", "PrintMotd no", "PrintLastLog no",
            "PermitUserRC no", "UseDNS no", "PermitTTY no", "DisableForwarding yes", "",
        ]))
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_banner(port, proc)
            break
        except RuntimeError:
            proc.kill()
            proc.wait()
    else:
        raise RuntimeError("could not start sshd on loopback")
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return SshServer("127.0.0.1", port, getpass.getuser(), root / "user_key", root / "known_hosts", root), proc


def stop_sshd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    try:
        server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    stop_sshd(proc)


class FlakyProxy:
    """A loopback TCP proxy that slams the door on the first `drops` connections, then forwards to `target_port`.

    A dropped connection is what a device that is still booting or a flaky link looks like to SSH:
    the client gets EOF instead of a protocol banner.
    """

    def __init__(self, target_port: int, drops: int):
        self.target_port, self.drops, self.accepted = target_port, drops, 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 60  # never outlives a test run by much
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.accepted <= self.drops:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def flaky_proxy(sshd):
    proxies = []

    def make(drops: int) -> FlakyProxy:
        proxy = FlakyProxy(sshd.port, drops)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def make_conv_onnx(path: Path, width: int = 8, dynamic_batch: bool = True, op: str = "Conv") -> Path:
    """A small real CNN as ONNX (conv-relu, conv-relu, global pool, gemm) on 1x28x28 inputs, built directly with onnx.helper.

    Seeded weights; `width` scales channels (for predictor monotonicity); `op` replaces the second
    conv's op type (a name the TensorRT parser would not know, for parse-error tests).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((width, 1, 3, 3)).astype(np.float32) * 0.3, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2 * width, width, 3, 3)).astype(np.float32) * 0.1, "w2")
    fc = numpy_helper.from_array(rng.standard_normal((10, 2 * width)).astype(np.float32) * 0.1, "fc")
    bias = numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node(op, ["r1", "w2"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["output"], name="/fc/Gemm", transB=1),
    ]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(nodes, "squeeze_test_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 28, 28])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])], [w1, w2, fc, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="squeeze-tests")
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx_path(tmp_path_factory) -> Path:
    return make_conv_onnx(tmp_path_factory.mktemp("remote-onnx") / "tiny.onnx")
