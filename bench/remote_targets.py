"""Remote targets, side by side: local `cpu` vs `ssh://` (loopback) on the same ONNX, plus the Jetson predictor.

    python bench/remote_targets.py [--iterations 200] [--rounds 4] [--threads 1]

1. Starts a throw-away OpenSSH server on 127.0.0.1 (as the tests do) and profiles each sample
   teacher's ONNX with the local `cpu` target and with `ssh://` (remote Python = this venv's),
   interleaved in rounds (A B A B ...), same threads. Both run on THIS machine, so their p50s
   should agree: the ratio shows the SSH target measures what the local one does (the remote
   script times inside the remote process; the transport is not in the numbers).
2. Prints the roofline predictor's (uncalibrated, PREDICTED) latency of the same models on every
   Jetson module, batch 1 and 8 - for ranking only; no device was available to check them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ssh_fixtures import start_sshd, stop_sshd  # noqa: E402

from squeeze.measure.analysis import onnx_summary  # noqa: E402
from squeeze.io.data import load_data  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402
from squeeze.io.onnx_export import ExportConfig, export_onnx  # noqa: E402
from squeeze.targets import get_target  # noqa: E402
from squeeze.targets.base import ProfileSpec  # noqa: E402
from squeeze.targets.jetson import JETSON_PROFILES  # noqa: E402
from squeeze.targets.ssh import SshTarget, SshTargetConfig  # noqa: E402

TEACHERS = ["resnet_mnist", "mobilenetv2_mnist"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    spec = ProfileSpec(batch_size=1, warmup=20, iterations=args.iterations, threads=args.threads)
    data = load_data("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        server, proc = start_sshd(Path(tmp))
        try:
            from squeeze.targets.remote.transport import SshOptions

            remote = SshTarget(f"ssh://{server.address}", SshTargetConfig(
                remote_python=sys.executable, work_base=tmp,
                ssh=SshOptions(identity_file=str(server.key), known_hosts=str(server.known_hosts), ssh_config=str(Path(tmp) / "none"))))
            cpu = get_target("cpu")
            rows, predicted = [], []
            for name in TEACHERS:
                art = export_onnx(load_model(ROOT / "samples" / "teachers" / f"{name}.pt"), Path(tmp) / f"{name}.onnx", ExportConfig(), data)
                local, over_ssh = [], []
                for _ in range(args.rounds):
                    local.append(cpu.profile(art, spec).p50_ms)
                    over_ssh.append(remote.profile(art, spec).p50_ms)
                lm, rm = statistics.median(local), statistics.median(over_ssh)
                rows.append((name, lm, rm, rm / lm, min(local), max(local), min(over_ssh), max(over_ssh)))
                summary = onnx_summary(art.path)
                for target in JETSON_PROFILES:
                    t = get_target(target)
                    predicted.append((name, summary["macs"] / 1e6, target, t.predict(art, ProfileSpec(batch_size=1)).p50_ms,
                                      t.predict(art, ProfileSpec(batch_size=8)).p50_ms))
        finally:
            stop_sshd(proc)
    print(f"cpu (local) vs ssh:// (loopback), batch 1, {args.threads} thread(s), {args.iterations} timed runs x {args.rounds} interleaved rounds")
    print(f"{'model':<20} {'cpu p50':>9} {'ssh p50':>9} {'ssh/cpu':>8}   {'cpu p50 range':>17}   {'ssh p50 range':>17}")
    print("-" * 92)
    for name, lm, rm, ratio, lmin, lmax, rmin, rmax in rows:
        print(f"{name:<20} {lm:8.3f}ms {rm:8.3f}ms {ratio:7.2f}x   {lmin:7.3f}-{lmax:7.3f}ms   {rmin:7.3f}-{rmax:7.3f}ms")
    print()
    print("PREDICTED (roofline, uncalibrated, not measured): TensorRT strongly typed (FP32 -> TF32), GPU only")
    print(f"{'model':<20} {'MMACs':>7} {'target':<22} {'batch 1':>9} {'batch 8':>9}")
    print("-" * 72)
    for name, mmacs, target, b1, b8 in predicted:
        print(f"{name:<20} {mmacs:7.1f} {target:<22} {b1:8.3f}ms {b8:8.3f}ms")


if __name__ == "__main__":
    main()
