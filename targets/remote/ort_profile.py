"""Self-contained ONNX Runtime CPU timing script, copied to a remote machine by the `ssh://` target.

It needs only Python 3.8+, numpy and onnxruntime on the remote (not squeeze), and follows the
same method as squeeze's local `cpu` target: one session (sequential, all graph optimisations,
intra-op threads as asked, inter-op 1), a pre-allocated seeded random input, untimed warm-up,
then `perf_counter_ns` around each `run`. It prints ONE JSON document on stdout with the raw
times; statistics are computed on the squeeze side so every target summarises the same way.
"""

import argparse
import json
import os
import platform
import sys
import time


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_info():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Model", "Hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            model = fh.read().rstrip(b"\0").decode(errors="replace")
    except OSError:
        pass
    return {"hostname": platform.node(), "machine": platform.machine(), "cpu": cpu, "board": model,
            "usable_cores": usable_cores(), "system": platform.system(), "python": platform.python_version()}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="input shape with batch, e.g. 1x1x28x28")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="0: every usable core")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        print(json.dumps({"error": "missing-module", "module": getattr(exc, "name", None) or str(exc), "python": sys.executable}))
        return 3
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - reported to the caller as data
        print(json.dumps({"error": "session", "message": str(exc).splitlines()[0][:300]}))
        return 4
    shape = [int(s) for s in args.shape.split("x")]
    feed = {session.get_inputs()[0].name: np.random.default_rng(args.seed).standard_normal(shape).astype(args.dtype)}
    for _ in range(args.warmup):
        session.run(None, feed)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - start) / 1e6)
    print(json.dumps({
        "times_ms": times,
        "runtime_version": ort.__version__,
        "providers": session.get_providers(),
        "threads": options.intra_op_num_threads,
        "input_shape": shape,
        "host": host_info(),
        "numpy": np.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
