"""`squeeze compress` with the full sample recipes on both MNIST teachers: the issue's end-to-end target.

    nice -n 5 .venv/bin/python bench/compress_full.py [--teachers resnet_mnist mobilenetv2_mnist] [--cache-dir DIR]

For each teacher: compress with samples/recipes/<teacher>.yaml and no --latency-budget, so the
passes aim at 1/4 of the teacher's p50 (compress's derived budget); then the result is judged on
what the manifest measured in the same run, interleaved: output/teacher p50 ratio <= 0.25 and
accuracy drop <= 1.0 pt on the 2000 held-out images. Prints the stage table of each run and one
summary table. Pass outputs are cached (--cache-dir), so a re-run only re-measures.
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

from squeeze import api  # noqa: E402
from squeeze.report import STAGE_HEADER, stage_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["resnet_mnist", "mobilenetv2_mnist"])
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "squeeze-bench-compress-cache"))
    parser.add_argument("--out-dir", default=str(Path(tempfile.gettempdir()) / "squeeze-bench-compress"))
    parser.add_argument("--max-ratio", type=float, default=0.25)
    parser.add_argument("--max-drop", type=float, default=1.0)
    args = parser.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    summary = []
    for name in args.teachers:
        started = time.perf_counter()
        out = Path(args.out_dir) / name
        result = api.compress(ROOT / "samples" / "teachers" / f"{name}.pt", target="cpu", out=out, data="mnist",
                              recipe=ROOT / "samples" / "recipes" / f"{name}.yaml", max_accuracy_drop=args.max_drop,
                              cache_dir=args.cache_dir, progress=lambda m, n=name: print(f"  [{n}] {m}", file=sys.stderr, flush=True))
        seconds = time.perf_counter() - started
        print(f"\n{name}: samples/recipes/{name}.yaml, {seconds / 60:.1f} min (pass cache: {args.cache_dir})")
        widths = [max(len(h), *(len(r[i]) for r in stage_rows(result))) for i, h in enumerate(STAGE_HEADER)]
        print("  ".join(h.ljust(w) for h, w in zip(STAGE_HEADER, widths)))
        for row in stage_rows(result):
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        acc = result["accuracy"]
        ratio = result["latency"]["p50_ms"] / result["teacher_latency"]["p50_ms"]
        drop = 100 * (acc["teacher_accuracy"] - acc["output_accuracy"])
        summary.append((name, acc["teacher_accuracy"], acc["output_accuracy"], drop, result["teacher_latency"]["p50_ms"],
                        result["latency"]["p50_ms"], ratio, ratio <= args.max_ratio and drop <= args.max_drop, seconds))
        json.dump({k: v for k, v in result.items() if k != "layer_latency"}, open(out.with_suffix(".summary.json"), "w"), indent=1, default=str)
    print(f"\n{'teacher':20s} {'teacher acc':>11s} {'output acc':>10s} {'drop pt':>7s} {'teacher p50':>11s} {'output p50':>10s} "
          f"{'ratio':>6s} {'target':>7s} {'minutes':>7s}")
    for name, ta, oa, drop, tl, ol, ratio, ok, sec in summary:
        print(f"{name:20s} {100 * ta:10.2f}% {100 * oa:9.2f}% {drop:7.2f} {tl:9.3f}ms {ol:8.3f}ms {ratio:6.3f} "
              f"{'met' if ok else 'MISSED':>7s} {sec / 60:7.1f}")
    print(f"\ntarget: output/teacher p50 <= {args.max_ratio} and accuracy drop <= {args.max_drop} pt; latencies from compress's "
          "interleaved rounds (5 x 300 runs, batch 1, ORT CPU, all cores), accuracy on the 2000 held-out MNIST images")


if __name__ == "__main__":
    main()
