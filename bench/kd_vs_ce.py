"""Does distillation beat training on labels alone? Same student, schedule, data and selection rule.

    python bench/kd_vs_ce.py [--seeds 0 1 2] [--epochs 8] [--student squeeze.zoo:tiny_cnn --width 16]

For each seed, trains the student three ways through `squeeze distill`'s own code path:
  ce        labels only (the baseline)
  kd        Hinton KD from the bundled ResNet teacher: 0.1·CE + 0.9·T²·KL, T = 4
  kd-free   label-free KD: teacher outputs only, never a label
then prints eval-split accuracy per seed, mean ± std, the KD − CE gain against the seed-to-seed
spread, and label-free KD as a fraction of labelled KD. Paste the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from squeeze import api  # noqa: E402

METHODS = {"ce": {"loss": "ce"}, "kd": {"loss": "kd"}, "kd-free": {"loss": "kd", "label_free": True}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default=str(ROOT / "samples" / "teachers" / "resnet_mnist.pt"))
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--student", default="squeeze.zoo:tiny_cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {m: [] for m in METHODS}
    agreement: dict[str, list[float]] = {m: [] for m in METHODS}
    meta: dict = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "student.json"
        spec.write_text(json.dumps({"arch": args.student, "kwargs": {"width": args.width}}))
        for seed in args.seeds:
            for method, options in METHODS.items():
                r = api.distill(args.teacher, str(spec), data=args.data, out=Path(tmp) / f"{method}-{seed}",
                                epochs=args.epochs, seed=seed, **options)
                results[method].append(r["eval"]["student_accuracy"])
                agreement[method].append(r["eval"]["agreement"])
                meta = {"teacher_acc": r["eval"]["teacher_accuracy"], "samples": r["eval"]["samples"], "student": r["student"],
                        "teacher": r["teacher"], "train": r["data"]["train"]}
                print(f"seed {seed} {method:<8} eval acc {r['eval']['student_accuracy'] * 100:.2f}%  agreement {r['eval']['agreement'] * 100:.2f}%"
                      f"  ({time.time() - started:.0f}s)", flush=True)

    def ms(xs: list[float]) -> str:
        return f"{statistics.mean(xs) * 100:.2f} ± {statistics.stdev(xs) * 100 if len(xs) > 1 else 0:.2f}"

    print(f"\nteacher {Path(args.teacher).name}: {meta['teacher']['params']} params, {meta['teacher']['macs'] / 1e6:.1f} MMACs, "
          f"eval acc {meta['teacher_acc'] * 100:.2f}%")
    print(f"student {args.student}(width={args.width}): {meta['student']['params']} params "
          f"({meta['student']['params'] / meta['teacher']['params'] * 100:.2f}% of the teacher), {meta['student']['macs'] / 1e6:.3f} MMACs")
    print(f"data {args.data}: {meta['train']} train, {meta['samples']} eval; {args.epochs} epochs, SGD lr 0.05 cosine, batch 128, "
          f"best epoch picked on the calibration split; seeds {args.seeds}\n")
    print(f"{'method':<10}" + "".join(f"{'seed ' + str(s):>10}" for s in args.seeds) + f"{'mean ± std (acc %)':>22}{'agreement %':>14}")
    for method in METHODS:
        print(f"{method:<10}" + "".join(f"{a * 100:>10.2f}" for a in results[method]) + f"{ms(results[method]):>22}"
              f"{statistics.mean(agreement[method]) * 100:>14.2f}")
    gains = [k - c for k, c in zip(results["kd"], results["ce"])]
    spread = max(statistics.stdev(results["kd"]), statistics.stdev(results["ce"])) if len(args.seeds) > 1 else 0.0
    print(f"\nKD − CE per seed: {', '.join(f'{g * 100:+.2f}' for g in gains)} pp; mean {statistics.mean(gains) * 100:+.2f} pp; "
          f"largest seed-to-seed std {spread * 100:.2f} pp → {'KD wins beyond the spread' if min(gains) > 0 and statistics.mean(gains) > spread else 'NOT beyond the spread'}")
    ratio = statistics.mean(results["kd-free"]) / statistics.mean(results["kd"])
    print(f"label-free KD / labelled KD accuracy: {ratio * 100:.1f}% (target ≥ 95%)")
    print(f"total time {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
