"""INT8 quantization-aware distillation on both MNIST sample teachers: float vs PTQ vs QAD.

    nice -n 10 python bench/quantize.py [--epochs 2 --train-samples 2048] [--targets cpu tensorrt] > bench.log

Each teacher is quantized through `squeeze quantize`'s own code path with itself as the teacher
(ModelOpt-style QAD: the float model teaches its fake-quant copy), for each target:
  cpu       torch-fx backend, uint8 activations; the speed guard measures float vs INT8 ONNX on ORT
            (interleaved rounds, same threads) and the table shows those medians
  tensorrt  ModelOpt backend, TensorRT's QDQ rules; TensorRT cannot run here, so no latency: the
            graph is checked against TensorRT's documented rules and parity is checked on ORT CPU
Accuracy is on the teacher's held-out eval split (2000 images); the best QAT epoch is picked on the
calibration split. Paste the printed table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from squeeze import api  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teachers", nargs="+", default=["resnet_mnist", "mobilenetv2_mnist"])
    parser.add_argument("--targets", nargs="+", default=["cpu", "tensorrt"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", default=None, help="also write every run's result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, results = [], {}
    for target in args.targets:
        for name in args.teachers:
            path = ROOT / "samples" / "teachers" / f"{name}.pt"
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="squeeze-bench-quant-") as tmp:
                r = api.quantize(path, teacher=None, data="mnist", target=target, out=Path(tmp) / "quant",
                                 epochs=args.epochs, train_samples=args.train_samples, threads=args.threads,
                                 progress=lambda m, n=name, t=target: print(f"  [{n} {t}] {m}", file=sys.stderr, flush=True))
            seconds = time.perf_counter() - started
            results[f"{name}/{target}"] = r
            acc = r["accuracy"]
            lat = r["latency"]
            rows.append({
                "model": name, "target": target, "backend": r["backend"]["name"],
                "float": acc["float"]["accuracy"], "ptq": acc["ptq"]["accuracy"], "qad": acc["qad"]["accuracy"],
                "onnx": acc["int8_onnx"]["accuracy"], "agree": acc["int8_onnx"]["teacher_agreement"], "best": r["best_epoch"],
                "maxdiff": r["parity"]["max_abs_diff"], "tol": r["parity"]["tolerance_max_abs"], "ptop1": r["parity"]["top1_agreement"],
                "float_ms": lat.get("float_p50_ms"), "int8_ms": lat.get("int8_p50_ms"), "excluded": len(lat.get("excluded_layers", [])),
                "seconds": seconds,
            })
            print(f"done {name} {target} in {seconds:.0f}s", file=sys.stderr, flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1, default=str))
    head = (f"{'model':<18} {'target':<9} {'backend':<9} {'float':>7} {'PTQ':>7} {'QAD':>7} {'QAD-fl':>7} {'INT8 ORT':>8} "
            f"{'agree':>7} {'ep':>2} {'max|diff|':>9} {'tol':>6} {'top1':>6} {'float p50':>9} {'INT8 p50':>9} {'speedup':>7} {'excl':>4} {'sec':>5}")
    print(head)
    print("-" * len(head))
    pct = lambda v: f"{v * 100:.2f}%"  # noqa: E731
    for r in rows:
        lat = (f"{r['float_ms']:>7.3f}ms {r['int8_ms']:>7.3f}ms {r['float_ms'] / r['int8_ms']:>6.2f}x" if r["float_ms"]
               else f"{'n/a':>9} {'n/a':>9} {'n/a':>7}")
        print(f"{r['model']:<18} {r['target']:<9} {r['backend']:<9} {pct(r['float']):>7} {pct(r['ptq']):>7} {pct(r['qad']):>7} "
              f"{(r['qad'] - r['float']) * 100:>+6.2f}p {pct(r['onnx']):>8} {pct(r['agree']):>7} {r['best']:>2} {r['maxdiff']:>9.3f} "
              f"{r['tol']:>6.2f} {r['ptop1']:>6.3f} {lat} {r['excluded']:>4} {r['seconds']:>5.0f}")
    print(f"\nQAD: {args.epochs} epochs on {args.train_samples} training images, lr 5e-4, KD (T=4, 0.9 KD + 0.1 CE) from the float "
          f"teacher; latency: ORT CPU, batch 1, {args.threads} threads, medians of interleaved rounds (speed guard)")


if __name__ == "__main__":
    main()
