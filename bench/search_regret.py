"""Which ranker picks the best distilled student inside a latency budget? Within-budget regret and in-band Kendall tau
of every ranker on the stored student pools (bench/pools/*.json, built by bench/student_pool.py), issue 19.

    .venv/bin/python bench/search_regret.py [bench/pools/mnist_resnet.json ...] [--shortlist 8] [--boot 1000]

Regret at a budget B: among the pool's students whose measured p50 (1 thread) is <= B, the distilled accuracy of the
best one minus that of the one the ranker picks (its highest score), in points, per ground-truth KD seed and ranker
seed (proxy seed / few-shot seed), averaged; the budgets are the 30/50/70/90 % quantiles of the pool's latency, so
every budget has a choice to make. Random selection's regret is its expectation (best minus the mean inside the
budget). In-band tau: Kendall tau between a ranker's score and the seed-mean distilled accuracy inside each latency
tertile, averaged over the three. 95 % intervals: bootstrap over the pool's students (resampled with replacement,
budgets fixed). Cost: a ranker's seconds for one budget's decision, against one full `squeeze distill` of a median
pool student (the full recipe's 15 epochs, >= 800 steps, of the full train split with the teacher's forward pass, from
the pool's measured rates). The row marked `<- default` is what `squeeze search` runs by default on the pool's data
(SearchConfig: proxy params, fewshot_top 8, the few-shot steps scaled with the train split). `--plot DIR` draws each
pool's accuracy vs latency with the students that params, DisWOT and the default pick at each budget.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from squeeze.passes.search.fewshot import auto_steps  # noqa: E402
from squeeze.passes.search.pass_ import SearchConfig  # noqa: E402
from squeeze.passes.search.zero_cost import log_rank_aggregate  # noqa: E402

QUANTILES = (0.3, 0.5, 0.7, 0.9)
SIZE_FREE = ("zico", "meco", "nwot", "synflow", "snip", "grad-norm")
FULL_DISTILL_EPOCHS, FULL_DISTILL_MIN_STEPS = 15, 800  # the built-in full recipe's distill: the cost reference

# A ranker: (pool, candidate indices, ranker seed) -> one score per candidate, higher = picked first
Ranker = Callable[[dict[str, Any], list[int], str], list[float]]


def proxy(name: str) -> Ranker:
    return lambda pool, idx, seed: [pool["students"][i]["proxies"][seed][name] for i in idx]


def log_rank(names: tuple[str, ...]) -> Ranker:
    def rank(pool, idx, seed):
        return log_rank_aggregate([[pool["students"][i]["proxies"][seed][n] for i in idx] for n in names])
    return rank


def fewshot(field: str, steps: int) -> Ranker:
    sign = -1.0 if field == "sotl" else 1.0  # a lower training loss is better
    return lambda pool, idx, seed: [sign * pool["students"][i]["fewshot"][seed][str(steps)][field] for i in idx]


def shortlist(first: Ranker, m: int, second: Ranker) -> Ranker:
    """Successive halving's two tiers: the zero-cost ranker's top m go to the short distillation, ranked by `second`."""
    def rank(pool, idx, seed):
        zero = first(pool, idx, seed)
        top = set(sorted(range(len(idx)), key=lambda k: zero[k], reverse=True)[:m])
        shots = second(pool, idx, seed)
        return [shots[k] if k in top else -math.inf for k in range(len(idx))]
    return rank


def rankers(pool: dict[str, Any], shortlists: tuple[int, ...]) -> dict[str, tuple[Ranker, str]]:
    """name -> (ranker, what it costs: 'zero' or 'fewshot:<candidates or all>:<steps>')"""
    out: dict[str, tuple[Ranker, str]] = {n: (proxy(n), "zero") for n in ("params", "macs", "diswot", "diswot-semantic", *SIZE_FREE)}
    out["latency (slowest in budget)"] = (lambda pool, idx, seed: [pool["students"][i]["latency_ms"]["p50_ms"] for i in idx], "zero")
    out["log-rank zico+meco+nwot+params"] = (log_rank(("zico", "meco", "nwot", "params")), "zero")
    out["log-rank size-free proxies"] = (log_rank(SIZE_FREE), "zero")
    out["log-rank size-free + params"] = (log_rank((*SIZE_FREE, "params")), "zero")
    for steps in pool["schedule"]["fewshot"]["steps"]:
        for field, label in (("accuracy", "acc"), ("sotl", "SoTL-E")):
            signal = fewshot(field, steps)
            out[f"few-shot {label} @{steps} (every candidate)"] = (signal, f"fewshot:all:{steps}")
            for m in shortlists:
                out[f"params top-{m} -> few-shot {label} @{steps}"] = (shortlist(proxy("params"), m, signal), f"fewshot:{m}:{steps}")
    return out


def accuracy(student: dict[str, Any], seed: str) -> float:
    return 100.0 * student["kd"][seed]["accuracy"]


def mean_accuracy(student: dict[str, Any]) -> float:
    return statistics.mean(100.0 * r["accuracy"] for r in student["kd"].values())


def latency(student: dict[str, Any]) -> float:
    return student["latency_ms"]["p50_ms"]


def budgets(pool: dict[str, Any]) -> list[float]:
    lat = sorted(latency(s) for s in pool["students"])
    return [lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] for q in QUANTILES]


def ranker_seeds(pool: dict[str, Any], cost: str) -> list[str]:
    """A few-shot ranker's seed is its short run's (init and batches); a zero-cost one's, the proxy batch and init."""
    return [str(s) for s in (pool["seeds"] if cost.startswith("fewshot") else pool["proxy_seeds"])]


def regret(pool: dict[str, Any], students: list[int], ranker: Ranker | None, cost: str, limits: list[float]) -> float:
    """Mean regret (points) over budgets, ground-truth seeds and ranker seeds; ranker None = random's expectation."""
    values = []
    for limit in limits:
        idx = [i for i in students if latency(pool["students"][i]) <= limit]
        if len(idx) < 2:
            continue
        for gt in (str(s) for s in pool["seeds"]):
            accs = [accuracy(pool["students"][i], gt) for i in idx]
            if ranker is None:
                values.append(max(accs) - statistics.mean(accs))
                continue
            for seed in ranker_seeds(pool, cost):
                scores = ranker(pool, idx, seed)
                pick = max(range(len(idx)), key=lambda k: (scores[k], -k))
                values.append(max(accs) - accs[pick])
    return statistics.mean(values) if values else float("nan")


def latency_bands(pool: dict[str, Any], students: list[int]) -> list[list[int]]:
    order = sorted(students, key=lambda i: latency(pool["students"][i]))
    return [order[k * len(order) // 3:(k + 1) * len(order) // 3] for k in range(3)]


def in_band_noise_ceiling(pool: dict[str, Any]) -> list[float]:
    """Kendall tau between the first and last KD seed's accuracies inside each latency tertile: what the ground truth
    itself agrees on, the most any ranker's in-band tau can be expected to reach."""
    first, last = str(pool["seeds"][0]), str(pool["seeds"][-1])
    return [kendalltau([accuracy(pool["students"][i], first) for i in band], [accuracy(pool["students"][i], last) for i in band]).statistic
            for band in latency_bands(pool, list(range(len(pool["students"]))))]


def in_band_tau(pool: dict[str, Any], students: list[int], ranker: Ranker | None, cost: str) -> float:
    if ranker is None:
        return 0.0
    bands = latency_bands(pool, students)
    taus = []
    for band in bands:
        truth = [mean_accuracy(pool["students"][i]) for i in band]
        for seed in ranker_seeds(pool, cost):
            tau = kendalltau(ranker(pool, band, seed), truth).statistic
            if not math.isnan(tau):
                taus.append(tau)
    return statistics.mean(taus) if taus else float("nan")


def interval(values: list[float]) -> tuple[float, float]:
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return float("nan"), float("nan")
    return clean[int(0.025 * (len(clean) - 1))], clean[int(0.975 * (len(clean) - 1))]


def cost_seconds(pool: dict[str, Any], cost: str, limits: list[float]) -> float:
    """Seconds one budget's decision takes (the median budget's candidate count), beyond the zero-cost scores: the
    teacher's logits of the fixed batches once, and each shortlisted candidate's short distillation."""
    if cost == "zero":
        return 0.0
    _, count, steps = cost.split(":")
    counts = [sum(latency(s) <= limit for s in pool["students"]) for limit in limits]
    m = statistics.median(counts) if count == "all" else min(int(count), statistics.median(counts))
    shot = statistics.median(r[steps]["seconds"] for s in pool["students"] for r in s["fewshot"].values())
    teacher = statistics.median(r[steps] for s in pool["students"] for r in s["fewshot_teacher_seconds"].values())
    return teacher + m * shot


def full_distill_seconds(pool: dict[str, Any]) -> float:
    """One distillation as the built-in full recipe runs it (15 epochs, at least 800 steps of 128) of a median pool student:
    its training steps plus the teacher's forward passes, at the rates the pool measured."""
    train = pool["data"]["train"]
    epochs = max(FULL_DISTILL_EPOCHS, math.ceil(FULL_DISTILL_MIN_STEPS / max(1, train // 128)))
    images = epochs * train
    student_rate = statistics.median(r["images_per_s"] for s in pool["students"] for r in s["kd"].values())
    steps = str(max(pool["schedule"]["fewshot"]["steps"]))
    teacher_rate = int(steps) * pool["schedule"]["fewshot"]["batch_size"] / statistics.median(
        r[steps] for s in pool["students"] for r in s["fewshot_teacher_seconds"].values())
    return images / student_rate + images / teacher_rate


def evaluate(pool: dict[str, Any], m: tuple[int, ...], boot: int) -> list[dict[str, Any]]:
    everyone = list(range(len(pool["students"])))
    limits = budgets(pool)
    rng = random.Random(0)
    samples = [[rng.randrange(len(everyone)) for _ in everyone] for _ in range(boot)]
    full = full_distill_seconds(pool)
    rows = []
    for name, (ranker, cost) in {"random": (None, "zero"), **rankers(pool, m)}.items():
        rows.append({"ranker": name, "regret": regret(pool, everyone, ranker, cost, limits),
                     "regret_ci": interval([regret(pool, s, ranker, cost, limits) for s in samples]),
                     "tau": in_band_tau(pool, everyone, ranker, cost),
                     "tau_ci": interval([in_band_tau(pool, s, ranker, cost) for s in samples]) if ranker is not None else (0.0, 0.0),
                     "per_budget": [regret(pool, everyone, ranker, cost, [b]) for b in limits],
                     "cost_share": cost_seconds(pool, cost, limits) / full})
    return rows


def default_ranker(pool: dict[str, Any]) -> str:
    """The table row `squeeze search` runs by default on this pool's data: SearchConfig's proxy and shortlist, with the
    few-shot steps its auto rule gives for the pool's train split (the nearest the pool measured)."""
    cfg = SearchConfig()
    steps = auto_steps(pool["data"]["train"]) if cfg.fewshot_steps == 0 else cfg.fewshot_steps
    measured = min(pool["schedule"]["fewshot"]["steps"], key=lambda s: abs(s - steps))
    label = {"accuracy": "acc", "sotl": "SoTL-E"}[cfg.fewshot_rank_by]
    return f"{cfg.proxy} top-{cfg.fewshot_top} -> few-shot {label} @{measured}"


def picks(pool: dict[str, Any], ranker: Ranker, cost: str, limit: float) -> int:
    """The student a ranker picks under `limit` at its first seed."""
    idx = [i for i in range(len(pool["students"])) if latency(pool["students"][i]) <= limit]
    scores = ranker(pool, idx, ranker_seeds(pool, cost)[0])
    return idx[max(range(len(idx)), key=lambda k: (scores[k], -k))]


def plot_pool(pool: dict[str, Any], path: Path, out_dir: Path) -> Path:
    """Distilled accuracy vs latency per space, the budgets, and what params, DisWOT and the default pick under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 4.8))
    students = pool["students"]
    for space, marker in zip(sorted({s["space"] for s in students}), "os^"):
        mine = [s for s in students if s["space"] == space]
        ax.scatter([latency(s) for s in mine], [mean_accuracy(s) for s in mine], marker=marker, s=28, alpha=0.6, label=f"{space} space")
    table = {"random": (None, "zero"), **rankers(pool, (SearchConfig().fewshot_top,))}
    chosen = {"params": ("params", "tab:red", 14), "diswot": ("diswot", "tab:gray", 11), default_ranker(pool): ("default", "tab:green", 8)}
    for b, limit in enumerate(budgets(pool)):
        ax.axvline(limit, color="0.8", lw=0.8, zorder=0)
        for name, (label, colour, size) in chosen.items():
            ranker, cost = table[name]
            i = picks(pool, ranker, cost, limit)
            ax.plot(latency(students[i]), mean_accuracy(students[i]), "o", mfc="none", mec=colour, ms=size, mew=1.6,
                    label=f"{label} pick" if b == 0 else None)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # plain ms at 1-2-5 steps, not 2x10^-2
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("p50 latency, ms (ORT cpu, 1 thread; grey lines: the budgets)")
    ax.set_ylabel("distilled accuracy, % (mean of 2 seeds)")
    ax.set_title(f"{path.stem}: what each ranker picks inside each budget", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"search_{path.stem}.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def print_pool(pool: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    limits = budgets(pool)
    teacher_ms = pool["teacher"]["latency_ms"]["p50_ms"]
    accs = [mean_accuracy(s) for s in pool["students"]]
    seeds = [str(s) for s in pool["seeds"]]
    noise = kendalltau([accuracy(s, seeds[0]) for s in pool["students"]], [accuracy(s, seeds[-1]) for s in pool["students"]]).statistic
    print(f"\n## {path.name}: {len(pool['students'])} students of the {pool['space']} space, distilled from {pool['teacher']['file']} "
          f"({pool['teacher']['macs'] / 1e6:.1f} MMACs, p50 {teacher_ms:.3f} ms)")
    print(f"ground truth: {pool['schedule']['kd']}; seeds {pool['seeds']}; accuracy {min(accs):.2f}-{max(accs):.2f} %; "
          f"KD seed-vs-seed tau {noise:.3f} (noise ceiling)")
    ceiling = in_band_noise_ceiling(pool)
    print(f"in-band noise ceiling (KD seed vs seed inside each latency tertile): {statistics.mean(ceiling):.3f} "
          f"(tertiles {', '.join(f'{t:.2f}' for t in ceiling)})")
    print("budgets (p50, 1 thread): " + ", ".join(f"{b:.3f} ms (teacher/{teacher_ms / b:.1f}, "
                                                  f"{sum(latency(s) <= b for s in pool['students'])} students)" for b in limits))
    print(f"cost: one decision's extra seconds / one full-recipe distillation of a median student ({full_distill_seconds(pool):.0f} s)\n")
    head = f"{'ranker':<44}{'regret pt':>10}{'95% CI':>15}  {'in-band tau':>11}{'95% CI':>16}  " + "".join(
        f"{'@q' + str(int(q * 100)):>7}" for q in QUANTILES) + f"{'cost':>8}"
    print(head)
    print("-" * len(head))
    default = default_ranker(pool)
    for r in rows:
        lo, hi = r["regret_ci"]
        tlo, thi = r["tau_ci"]
        print(f"{r['ranker']:<44}{r['regret']:>10.2f}{f'{lo:.2f}-{hi:.2f}':>15}  {r['tau']:>11.3f}{f'{tlo:+.2f}..{thi:+.2f}':>16}  "
              + "".join(f"{v:>7.2f}" for v in r["per_budget"]) + f"{r['cost_share'] * 100:>7.1f}%"
              + ("  <- default" if r["ranker"] == default else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pools", nargs="*", type=Path)
    parser.add_argument("--shortlist", type=int, nargs="+", default=[4, 8], help="candidates the zero-cost tier sends to the few-shot tier")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--plot", type=Path, help="write search_<pool>.png here: accuracy vs latency and each ranker's picks")
    args = parser.parse_args()
    paths = args.pools or sorted((ROOT / "bench" / "pools").glob("*.json"))
    if not paths:
        raise SystemExit("no pools: build one with bench/student_pool.py")
    print("bench/search_regret.py " + " ".join(sys.argv[1:]))
    report = {}
    for path in paths:
        pool = json.loads(path.read_text())
        rows = evaluate(pool, tuple(args.shortlist), args.boot)
        print_pool(pool, rows, path)
        report[path.name] = rows
        if args.plot:
            print(f"plot: {plot_pool(pool, path, args.plot)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
