"""Prune both MNIST sample teachers to half their measured cpu latency; recover with and without layer distillation.

For each teacher:
1. `squeeze prune` with layer distillation, toward a budget of 0.5x the teacher's latency measured
   on the cpu target in the same run (interleaved with the candidates, then a closing interleaved
   measurement of teacher vs pruned);
2. the same structural steps replayed (`plan`) with logit KD only: the same architecture and the
   same recovery budget, so the difference is the layer-distillation term alone.

Prints params, MACs ratio vs measured latency ratio, and eval accuracy (unpruned, layer-distilled,
logit-KD only) on the teacher's held-out eval split (2000 images). Each model's runs are saved
under --out; `--report` prints the combined table from what is there (so the two models can run
as two processes side by side).

    nice -n 10 python bench/prune.py --models resnet_mnist --out bench-prune/
    nice -n 10 python bench/prune.py --models mobilenetv2_mnist --out bench-prune/
    python bench/prune.py --report --out bench-prune/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from squeeze import api  # noqa: E402

TEACHERS = {"resnet_mnist": ROOT / "samples/teachers/resnet_mnist.pt", "mobilenetv2_mnist": ROOT / "samples/teachers/mobilenetv2_mnist.pt"}
DROP = ("structure", "versions", "data")


def run_model(name: str, args: argparse.Namespace, out: Path) -> None:
    started = time.perf_counter()
    common = dict(data="mnist", target="cpu", ratio=args.ratio, steps=args.steps, recover_epochs=args.recover_epochs,
                  final_epochs=args.final_epochs, lr=args.lr, depth=not args.no_depth, profile_threads=args.threads,
                  latency_stat=args.latency_stat, seed=0)
    progress = lambda m: print(f"[{time.perf_counter() - started:6.0f}s] {name}: {m}", flush=True)  # noqa: E731
    ld = api.prune(TEACHERS[name], latency_budget=args.budget, out=out / f"{name}-layer", layer_distill=True, progress=progress, **common)
    t1 = time.perf_counter()
    kd = api.prune(TEACHERS[name], latency_budget=args.budget, out=out / f"{name}-kd", layer_distill=False, plan=tuple(ld["plan"]),
                   progress=progress, **common)
    record = {"model": name, "args": vars(args), "seconds": [round(t1 - started), round(time.perf_counter() - t1)],
              "ld": {k: v for k, v in ld.items() if k not in DROP}, "kd": {k: v for k, v in kd.items() if k not in DROP}}
    (out / f"{name}-bench.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"\n{name}: per-step table (layer-distillation run; latency = {args.latency_stat}, ratios interleaved)")
    print(f"{'step':>4}  {'action':<22} {'kept':<8} {'params':>8} {'MACs x':>7} {'lat x':>7} {'eval acc':>8}")
    for row in ld["steps"]:
        if row["accepted"]:
            print(f"{row['step']:>4}  {row['action']:<22} {'yes':<8} {row['params']:>8} {row['macs_ratio']:>7.3f} {row['latency_ratio']:>7.3f} "
                  f"{row['eval_accuracy'] * 100:>7.2f}%")
        else:
            print(f"{row['step']:>4}  {row['action']:<22} {'rejected':<8}   ({row['reason']})")


def report(models: list[str], out: Path) -> None:
    records = [json.loads((out / f"{m}-bench.json").read_text()) for m in models if (out / f"{m}-bench.json").exists()]
    if not records:
        raise SystemExit(f"no bench results in {out}")
    a = records[0]["args"]
    print(f"budget {a['budget']} of the teacher's cpu latency, measured in the same run ({a['threads']} ORT thread(s), per-round "
          f"{a['latency_stat']}); ratio cap {a['ratio']}, {a['steps']} steps, depth {not a['no_depth']}; recovery {a['recover_epochs']} "
          f"epoch/step + {a['final_epochs']} final, lr {a['lr']}; eval = 2000 held-out MNIST images")
    head = (f"{'model':<18} {'params':>15} {'MACs x':>7} {'latency ms teacher -> pruned':>29} {'lat x':>6} {'budget':>6} "
            f"{'unpruned':>9} {'layer-KD':>9} {'logit-KD':>9} {'drop (LD)':>9}")
    print(head)
    print("-" * len(head))
    for r in records:
        ld, kd = r["ld"], r["kd"]
        lat = ld["latency"]
        unpruned = ld["input"]["eval_accuracy"] * 100
        print(f"{r['model']:<18} {ld['input']['params']:>7}->{ld['pruned']['params']:<7} {ld['macs_ratio']:>7.3f} "
              f"{lat['input_ms']:>13.3f} -> {lat['pruned_ms']:<12.3f} {lat['ratio']:>6.3f} {'met' if ld['budget_met'] else 'MISSED':>6} "
              f"{unpruned:>8.2f}% {ld['pruned']['eval_accuracy'] * 100:>8.2f}% {kd['pruned']['eval_accuracy'] * 100:>8.2f}% "
              f"{unpruned - ld['pruned']['eval_accuracy'] * 100:>8.2f}")
    for r in records:
        ld = r["ld"]
        p50 = (ld["latency"]["pruned_stats"]["p50_ms"], ld["latency"]["input_stats"]["p50_ms"])
        print(f"{r['model']}: plan {', '.join(ld['plan'])}; removed blocks {ld['pruned']['removed_blocks'] or 'none'}; "
              f"last-round p50 teacher {p50[1]:.3f} ms, pruned {p50[0]:.3f} ms; run seconds (layer-KD, logit-KD) {r['seconds']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    parser.add_argument("--out", required=True, help="where each model's runs and bench record are kept")
    parser.add_argument("--report", action="store_true", help="only print the combined table from the records in --out")
    parser.add_argument("--budget", default="0.5x")
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--recover-epochs", type=float, default=0.3)
    parser.add_argument("--final-epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--no-depth", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="ORT intra-op threads when profiling; 1 because on an oversubscribed shared CPU a 2-thread session "
                             "stalls at its barriers and returns 30x outliers")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for recovery training; 1, because on an oversubscribed machine 2 OpenMP threads ran 4x slower")
    parser.add_argument("--latency-stat", default="min", choices=["p50", "min", "mean"],
                        help="per-round statistic compared; min, because p50 swings with other jobs on a shared CPU")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        torch.set_num_threads(args.torch_threads)
        for name in args.models:
            run_model(name, args, out)
    report(args.models, out)


if __name__ == "__main__":
    main()
