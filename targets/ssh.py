"""`ssh://user@host[:port]`: ONNX Runtime CPU on a remote machine (ARM boards, a Raspberry Pi, a Jetson's CPU).

Copies the ONNX and a small self-contained timing script (squeeze/remote_ort_profile.py) into a
fresh remote work dir, runs it with the remote Python, reads its JSON back, removes the work dir.
The remote needs Python 3 with numpy and onnxruntime; squeeze itself is not installed there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.io.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.targets.remote.transport import DeviceAddress, RemoteCommandError, RemoteHost, SshOptions
from squeeze.targets.base import ENGINE_OPTIONS, Availability, LatencyStats, ProfileSpec, QuantRules, TargetBase, TargetOptions
from squeeze.targets.ort_runtime import summarize

import squeeze.targets.remote.ort_profile as _script

SCRIPT = Path(_script.__file__)  # copied to the remote as is; it imports nothing from squeeze


@dataclass(frozen=True)
class SshTargetConfig:
    remote_python: str = "python3"
    work_base: str = "/tmp"  # where the per-run work dir is created on the remote
    ssh: SshOptions = field(default_factory=SshOptions)

    def __post_init__(self) -> None:
        if not self.remote_python.strip():
            raise UserInputError("--remote-python must name a Python executable on the remote machine")


class SshTarget(TargetBase):
    quant_rules = QuantRules(notes="ORT CPU EP on the remote: QDQ with int8 weights per channel (axis 0), int8 activations")
    channel_multiple = 8  # NEON/AVX kernels work in blocks of 4-8 floats

    def __init__(self, address: str | None = None, config: SshTargetConfig | None = None):
        self.address = DeviceAddress.parse(address) if address else None
        self.config = config or SshTargetConfig()
        port = self.config.ssh.port or (self.address.port if self.address else None)
        self.name = f"ssh://{self.address.user + '@' if self.address and self.address.user else ''}{self.address.host}" \
                    f"{':' + str(port) if port else ''}" if self.address else "ssh"
        self.description = "ONNX Runtime CPU on a remote machine over SSH: --target ssh://user@host[:port]"

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> SshTarget:
        if options.device is not None:
            raise UserInputError("an ssh target takes its address in the name: --target ssh://user@host[:port] (no --device)")
        options.refuse(name, ("power_mode", *ENGINE_OPTIONS), "an ssh:// target runs ONNX Runtime on a remote CPU")
        ssh = options.ssh_options()
        kwargs = {k: v for k, v in {"ssh": ssh, "remote_python": options.remote_python}.items() if v is not None}
        return cls(name if name.startswith("ssh://") else None, SshTargetConfig(**kwargs))

    def available(self) -> Availability:
        if self.address is None:
            return Availability(False, "needs an address: --target ssh://user@host[:port] (key auth; the host must be in known_hosts)")
        return Availability(True, f"will connect to {self.address} and run onnxruntime there with {self.config.remote_python}",
                            {"address": str(self.address), "remote_python": self.config.remote_python})

    def preflight(self) -> None:
        """One connection before any work: an unreachable host fails in seconds, not after the teacher's export."""
        if self.address is not None:
            with RemoteHost(self.address, self.config.ssh):
                pass

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact:
        raise UserInputError(f"{self.name} runs the ONNX file directly with ONNX Runtime: there is no engine to build")

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        if self.address is None:
            raise TargetUnavailableError(f"target ssh is unavailable: {self.available().reason}")
        if not art.input_spec.dynamic_batch and spec.batch_size != art.input_spec.shape[0]:
            raise TargetUnavailableError(f"{art.path} has a static batch of {art.input_spec.shape[0]}; cannot profile batch {spec.batch_size}")
        shape = [spec.batch_size, *art.input_spec.shape[1:]]
        with RemoteHost(self.address, self.config.ssh) as host:
            work = host.make_workdir(self.config.work_base)
            try:
                host.put(Path(art.path), f"{work}/model.onnx")
                host.put(SCRIPT, f"{work}/profile.py")
                argv = [self.config.remote_python, f"{work}/profile.py", f"{work}/model.onnx", "--shape", "x".join(map(str, shape)),
                        "--dtype", art.input_spec.dtype, "--warmup", str(spec.warmup), "--iterations", str(spec.iterations),
                        "--threads", str(spec.threads or 0), "--seed", str(spec.seed)]
                result = host.run(argv, check=False, what="remote ONNX Runtime profiling")
            finally:
                host.remove_tree(work)
        report = self._read_report(result, host)
        times = np.asarray(report["times_ms"], dtype=np.float64)
        stats = summarize(times)
        return LatencyStats(
            target=self.name,
            runtime="onnxruntime",
            runtime_version=report["runtime_version"],
            providers=report["providers"],
            batch_size=spec.batch_size,
            input_shape=report["input_shape"],
            warmup=spec.warmup,
            iterations=spec.iterations,
            threads=report["threads"],
            throughput_per_s=spec.batch_size * 1000.0 / stats["mean_ms"],
            options={
                "intra_op_num_threads": report["threads"],
                "inter_op_num_threads": 1,
                "execution_mode": "sequential",
                "graph_optimization_level": "ORT_ENABLE_ALL",
                "timer": "time.perf_counter_ns around InferenceSession.run on the remote, input pre-allocated",
                "percentiles": "numpy linear interpolation (computed here from the remote's raw times)",
                "transport": f"ssh (paramiko) to {host}",
                "remote_python": self.config.remote_python,
                "remote_command": " ".join(argv),
                "connect_attempts": host.attempts,
            },
            host={**report["host"], "address": str(host), "numpy": report.get("numpy")},
            **stats,
        )

    def _read_report(self, result: Any, host: RemoteHost) -> dict[str, Any]:
        last = next((line for line in reversed(result.stdout.strip().splitlines()) if line.startswith("{")), None)
        if last is None:
            if result.returncode == 127 or "not found" in result.stderr:
                raise RemoteCommandError(f"{self.config.remote_python!r} was not found on {host}: install Python 3 there "
                                         f"or pass --remote-python /path/to/python")
            tail = " | ".join(result.output.strip().splitlines()[-4:])
            raise RemoteCommandError(f"remote profiling on {host} failed (exit {result.returncode}): {tail}")
        report = json.loads(last)
        if report.get("error") == "missing-module":
            raise RemoteCommandError(f"{report['module']} is not installed for {report['python']} on {host}: "
                                     f"pip install onnxruntime numpy there, or pass --remote-python with one that has them")
        if report.get("error"):
            raise RemoteCommandError(f"ONNX Runtime on {host} could not load the model: {report.get('message')}")
        return report
