"""Prune both MNIST sample teachers to half their measured cpu latency; recover with and without layer distillation.

For each teacher:
1. `squeeze prune` with layer distillation, toward a budget of 0.5x the teacher's latency measured
   on the cpu target in the same run (interleaved with the candidates, then a closing interleaved
   measurement of teacher vs pruned);
2. the same structural steps replayed (`plan`) with logit KD only: the same architecture and the
   same recovery budget, so the difference is the layer-distillation term alone.

Prints params, MACs ratio vs measured latency ratio, and eval accuracy (unpruned, layer-distilled,
logit-KD only) on the teacher's held-out eval split (2000 images).

    nice -n 10 python bench/prune.py > bench/prune.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from squeeze import api  # noqa: E402

TEACHERS = {"resnet_mnist": ROOT / "samples/teachers/resnet_mnist.pt", "mobilenetv2_mnist": ROOT / "samples/teachers/mobilenetv2_mnist.pt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    parser.add_argument("--budget", default="0.5x")
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--recover-epochs", type=float, default=0.3)
    parser.add_argument("--final-epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--no-depth", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="ORT intra-op threads when profiling; 1 because on an oversubscribed shared CPU a 2-thread session "
                             "stalls at its barriers and returns 30x outliers")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    keep = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="squeeze-bench-prune-"))
    keep.mkdir(parents=True, exist_ok=True)
    common = dict(data="mnist", target="cpu", ratio=args.ratio, steps=args.steps, recover_epochs=args.recover_epochs,
                  final_epochs=args.final_epochs, lr=args.lr, depth=not args.no_depth, profile_threads=args.threads, seed=0)
    rows = []
    for name in args.models:
        progress = lambda m, name=name: print(f"[{time.perf_counter() - started:6.0f}s] {name}: {m}", flush=True)  # noqa: E731
        t0 = time.perf_counter()
        ld = api.prune(TEACHERS[name], latency_budget=args.budget, out=keep / f"{name}-layer", layer_distill=True, progress=progress, **common)
        t1 = time.perf_counter()
        kd = api.prune(TEACHERS[name], latency_budget=args.budget, out=keep / f"{name}-kd", layer_distill=False, plan=tuple(ld["plan"]),
                       progress=progress, **common)
        t2 = time.perf_counter()
        print(f"\n{name}: per-step table (layer distillation run)")
        print(f"{'step':>4}  {'action':<22} {'kept':<8} {'params':>8} {'MACs x':>7} {'lat x':>7} {'eval acc':>8}")
        for row in ld["steps"]:
            if row["accepted"]:
                print(f"{row['step']:>4}  {row['action']:<22} {'yes':<8} {row['params']:>8} {row['macs_ratio']:>7.3f} {row['latency_ratio']:>7.3f} "
                      f"{row['eval_accuracy'] * 100:>7.2f}%")
            else:
                print(f"{row['step']:>4}  {row['action']:<22} {'rejected':<8}   ({row['reason']})")
        rows.append({"model": name, "ld": ld, "kd": kd, "seconds": (round(t1 - t0), round(t2 - t1))})
        (keep / f"{name}-summary.json").write_text(json.dumps({"plan": ld["plan"], "ld": ld["pruned"], "kd": kd["pruned"]}, indent=2))

    print(f"\nbudget {args.budget} of the teacher's cpu latency ({args.threads} ORT thread(s)); ratio cap {args.ratio}, {args.steps} steps, depth {not args.no_depth}; "
          f"recovery {args.recover_epochs} epoch/step + {args.final_epochs} final, lr {args.lr}; eval = 2000 held-out MNIST images")
    head = (f"{'model':<18} {'params':>15} {'MACs x':>7} {'latency ms (teacher -> pruned)':>31} {'lat x':>6} {'budget':>6} "
            f"{'unpruned':>9} {'layer-KD':>9} {'logit-KD':>9} {'drop LD':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ld, kd = r["ld"], r["kd"]
        lat = ld["latency"]
        unpruned = ld["input"]["eval_accuracy"] * 100
        print(f"{r['model']:<18} {ld['input']['params']:>7}->{ld['pruned']['params']:<7} {ld['macs_ratio']:>7.3f} "
              f"{lat['input_ms']:>14.3f} -> {lat['pruned_ms']:<13.3f} {lat['ratio']:>6.3f} {'met' if ld['budget_met'] else 'MISSED':>6} "
              f"{unpruned:>8.2f}% {ld['pruned']['eval_accuracy'] * 100:>8.2f}% {kd['pruned']['eval_accuracy'] * 100:>8.2f}% "
              f"{unpruned - ld['pruned']['eval_accuracy'] * 100:>7.2f}")
    for r in rows:
        print(f"{r['model']}: plan {', '.join(r['ld']['plan'])}; removed blocks {r['ld']['pruned']['removed_blocks'] or 'none'}; "
              f"run seconds (layer-KD, logit-KD) {r['seconds']}")
    print(f"total time {time.perf_counter() - started:.0f}s; runs kept in {keep}")


if __name__ == "__main__":
    main()
