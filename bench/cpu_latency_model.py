"""How well does the cpu latency model (squeeze/targets/cpu_latency_model.py) predict students it never saw?

    nice -n 10 python bench/cpu_latency_model.py [--students 40] [--threads 1] [--folds 4]

1. Students: `--students` architectures from both search spaces (ResNet and MobileNetV2, MNIST input
   1x28x28), picked at evenly spaced quantiles of log(MACs) from a seeded pool, exported to float ONNX.
2. Ground truth: every student timed by squeeze's one measurer, all interleaved in the same rounds
   (`--rounds` x `--iterations` runs each, ORT CPU, `--threads` intra-op threads, batch 1); p50.
3. The model: fitted on k-1 folds, error |predicted - measured| / measured on the held-out fold, for
   every fold (each student is predicted once, by a model that never saw it). Prints the median and
   the 90th percentile of that error, the ranking agreement (Kendall tau), and the fitted units.

The timings are saved in --work-dir (one file per run of the measurement): a re-run with the same
students and settings refits without timing again (--remeasure to time afresh).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from squeeze.io.artifacts import InputSpec, ModelArtifact  # noqa: E402
from squeeze.io.onnx_export import ExportConfig, export_onnx  # noqa: E402
from squeeze.measure.analysis import count_macs  # noqa: E402
from squeeze.measure.latency import MeasureConfig, compare  # noqa: E402
from squeeze.passes.search.spaces import get_space  # noqa: E402
from squeeze.targets import cpu_latency_model as clm  # noqa: E402
from squeeze.targets.cpu import CpuTarget  # noqa: E402

SHAPE = (1, 1, 28, 28)


def pick(n: int, pool: int = 600, min_macs: float = 2e5, max_macs: float = 6e7) -> list[tuple[str, dict, float]]:
    """(space, genome, MACs) for n students spread evenly in log(MACs) over both spaces."""
    rng, found = random.Random(2026), {}
    example = torch.zeros(SHAPE, device="meta")
    for name in ("resnet", "mobilenetv2"):
        space = get_space(name)
        for _ in range(pool // 2):
            genome = space.sample(rng)
            with torch.device("meta"):
                macs = count_macs(space.build(genome, 1, 10), example)
            if min_macs <= macs <= max_macs:
                found[(name, space.key(genome))] = (name, genome, macs)
    ordered = sorted(found.values(), key=lambda s: s[2])
    logs = [math.log(s[2]) for s in ordered]
    chosen: list[int] = []
    for i in range(n):
        target = logs[0] + (logs[-1] - logs[0]) * i / max(1, n - 1)
        chosen.append(min((j for j in range(len(ordered)) if j not in chosen), key=lambda j: abs(logs[j] - target)))
    return [ordered[j] for j in sorted(chosen, key=lambda j: ordered[j][0])]


def export_students(students: list[tuple[str, dict, float]], work: Path) -> list:
    arts = []
    for i, (name, genome, _) in enumerate(students):
        path = work / f"student{i:02d}_{name}.onnx"
        torch.manual_seed(i)
        module = get_space(name).build(genome, 1, 10).eval()
        art = ModelArtifact(module, InputSpec(SHAPE), f"{name}:{i}", "checkpoint", "")
        arts.append(export_onnx(art, path, ExportConfig()))
    return arts


def measure(arts: list, args: argparse.Namespace, work: Path) -> dict[str, float]:
    cache = work / f"timings_t{args.threads}_r{args.rounds}_i{args.iterations}.json"
    names = {a.path.name: a for a in arts}
    if cache.exists() and not args.remeasure:
        saved = json.loads(cache.read_text())
        if set(saved.get("p50_ms", {})) == set(names) and saved.get("sha256") == {n: a.sha256 for n, a in names.items()}:
            print(f"timings read back from {cache}")
            return saved["p50_ms"]
    cfg = MeasureConfig(block_iterations=args.iterations, warmup=10, min_rounds=args.rounds, max_rounds=args.rounds, threads=args.threads,
                        time_cap_s=1e9)
    result = compare(CpuTarget(), names, cfg, progress=lambda m: print(m, flush=True))
    p50 = {n: result.latency(n) for n in names}
    cache.write_text(json.dumps({"p50_ms": p50, "sha256": {n: a.sha256 for n, a in names.items()}, "load": result.load,
                                 "noisy": result.noisy, "why_noisy": result.why_noisy}, indent=1))
    if result.noisy:
        print("NOISY host while timing: " + "; ".join(result.why_noisy))
    return p50


def cross_validate(arts: list, p50: dict[str, float], folds: int, threads: int) -> tuple[np.ndarray, list[clm.CpuLatencyModel]]:
    order = list(range(len(arts)))
    random.Random(0).shuffle(order)
    predicted = np.zeros(len(arts))
    models = []
    for k in range(folds):
        test = [i for j, i in enumerate(order) if j % folds == k]
        train = [i for i in order if i not in test]
        model = clm.calibrate([arts[i].path for i in train], [p50[arts[i].path.name] for i in train], threads)
        models.append(model)
        for i in test:
            predicted[i] = model.predict_ms(arts[i].path)
    return predicted, models


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(2 * s / (n * (n - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--work-dir", default=str(ROOT / "out" / "cpu_latency_model"))
    parser.add_argument("--remeasure", action="store_true")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    students = pick(args.students)
    arts = export_students(students, work)
    p50 = measure(arts, args, work)
    measured = np.array([p50[a.path.name] for a in arts])
    predicted, models = cross_validate(arts, p50, args.folds, args.threads)
    errors = np.abs(predicted - measured) / measured
    print(f"\n{'student':<26} {'kernels':>7} {'MMACs':>7} {'measured ms':>11} {'predicted ms':>12} {'error %':>8}")
    for art, (_, _, macs), m, p, e in zip(arts, students, measured, predicted, errors):
        print(f"{art.path.stem:<26} {int(clm.features(art.path)[1]):>7} {macs / 1e6:>7.2f} {m:>11.4f} {p:>12.4f} {100 * e:>8.1f}")
    print(f"\n{len(arts)} students, {args.folds}-fold (each predicted by a model fitted without it), ORT CPU {args.threads} thread(s):")
    print(f"  median |error| {100 * np.median(errors):.1f} %, p90 {100 * np.percentile(errors, 90):.1f} %, max {100 * errors.max():.1f} %")
    print(f"  Kendall tau(predicted, measured) {kendall_tau(predicted, measured):.3f}")
    print("  fitted (fold 0): " + ", ".join(f"{k} {v}" for k, v in models[0].describe().items()))
    print(f"  target: median |error| <= 15 %: {'MET' if np.median(errors) <= 0.15 else 'NOT MET'}")


if __name__ == "__main__":
    main()
