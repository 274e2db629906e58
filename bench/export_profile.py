"""Side-by-side: each sample teacher in eager PyTorch vs its squeeze-exported ONNX on ONNX Runtime (CPU).

    python bench/export_profile.py [--iterations 300] [--threads 2] [--batch 1]

Both runtimes are timed in the same process, interleaved in rounds (A B A B ...) with the same
threads and the same real MNIST inputs, so machine noise hits both alike; the table gives medians,
p90 and the speed ratio. This is the baseline later passes must beat: today squeeze only exports,
so the ratio measures the runtime, not compression.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from squeeze.measure.analysis import count_macs, count_params  # noqa: E402
from squeeze.io.data import load_data  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402
from squeeze.io.onnx_export import ExportConfig, export_onnx  # noqa: E402
from squeeze.targets.ort_runtime import create_session  # noqa: E402

TEACHERS = ["resnet_mnist", "mobilenetv2_mnist"]


def time_calls(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("mnist")
    x, _ = data.batch("eval", args.batch)
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in TEACHERS:
            art = load_model(ROOT / "samples" / "teachers" / f"{name}.pt")
            onnx_art = export_onnx(art, Path(tmp) / f"{name}.onnx", ExportConfig(), data)
            session, _ = create_session(str(onnx_art.path), ["CPUExecutionProvider"], threads=args.threads)
            feed = {session.get_inputs()[0].name: x.numpy()}
            module = art.module
            with torch.inference_mode():
                eager = lambda: module(x)  # noqa: E731
                ort = lambda: session.run(None, feed)  # noqa: E731
                for fn in (eager, ort):
                    time_calls(fn, 20)  # warm-up
                t_eager, t_ort = [], []
                per_round = max(1, args.iterations // args.rounds)
                for _ in range(args.rounds):
                    t_eager += time_calls(eager, per_round)
                    t_ort += time_calls(ort, per_round)
            rows.append({
                "model": name,
                "params": count_params(module),
                "mmacs": count_macs(module, art.input_spec.example()) / 1e6,
                "acc": art.metadata.get("eval_accuracy"),
                "parity": onnx_art.parity["max_abs_diff"],
                "eager_p50": statistics.median(t_eager),
                "eager_p90": float(np.percentile(t_eager, 90)),
                "ort_p50": statistics.median(t_ort),
                "ort_p90": float(np.percentile(t_ort, 90)),
                "n": len(t_ort),
            })
    print(f"\nbatch {args.batch}, {args.threads} threads, {rows[0]['n']} timed runs each, interleaved in {args.rounds} rounds; "
          f"torch {torch.__version__}; host cores {len(__import__('os').sched_getaffinity(0))}\n")
    header = f"{'model':<20}{'params':>9}{'MMACs':>8}{'acc':>8}{'max|diff|':>11}{'eager p50':>11}{'eager p90':>11}{'ORT p50':>9}{'ORT p90':>9}{'eager/ORT':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<20}{r['params']:>9}{r['mmacs']:>8.1f}{r['acc'] * 100:>7.2f}%{r['parity']:>11.1e}"
              f"{r['eager_p50']:>9.3f}ms{r['eager_p90']:>9.3f}ms{r['ort_p50']:>7.3f}ms{r['ort_p90']:>7.3f}ms{r['eager_p50'] / r['ort_p50']:>10.2f}x")


if __name__ == "__main__":
    main()
