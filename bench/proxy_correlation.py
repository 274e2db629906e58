"""Do training-free proxies rank students the way distillation does? Kendall tau / Spearman rho on MNIST.

    nice -n 10 python bench/proxy_correlation.py [--students 20] [--seeds 0 1] [--proxy-seeds 0 1] [--epochs 3]

1. Students: `--pool` architectures drawn from the search space with a fixed seed, kept if their
   MACs lie in [--min-macs, --max-macs]; `--students` of them picked at evenly spaced quantiles
   of log(MACs), so the set spans a wide range of size (chosen before any training or scoring).
2. Ground truth: each student KD-trained for a fixed short schedule from the sample teacher
   (0.1 CE + 0.9 T^2 KL at T = 4, SGD-Nesterov lr 0.05, linear warm-up over 20% of the steps then cosine, batch 128,
   no augmentation, the teacher's logits on the train split cached once), once per `--seeds`;
   accuracy on the teacher's held-out eval split after the last epoch; the mean over seeds is
   the target ranking.
3. Proxies: each student scored by every proxy, once per `--proxy-seeds` (the seed picks the
   proxy batch from the calibration split and the student's initial weights); tau and rho are
   computed per proxy seed and reported as mean +/- std.
4. Cost: the DisWOT proxy's time per candidate (build + score) next to one KD epoch of the
   same student (with cached teacher logits: a lower bound on `squeeze distill`'s epoch).

Results per student are saved to --state after each training run, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402  (scipy ships with scikit-learn, a core dependency)

from squeeze import losses  # noqa: E402
from squeeze.analysis import count_macs, count_params  # noqa: E402
from squeeze.api import open_data  # noqa: E402
from squeeze.fsutil import write_json_atomic  # noqa: E402
from squeeze.modelio import load_model  # noqa: E402
from squeeze.passes.search import proxies  # noqa: E402
from squeeze.passes.search.pass_ import candidate_seed, fixed_batch  # noqa: E402
from squeeze.passes.search.spaces import get_space  # noqa: E402

# Proxy columns: (label, proxy, teacher init, semantic temperature)
COLUMNS = [
    ("DisWOT", "diswot", "trained", 4.0),
    ("DisWOT M_s (semantic)", "diswot-semantic", "trained", 4.0),
    ("DisWOT M_r (relation)", "diswot-relation", "trained", 4.0),
    ("DisWOT, random teacher", "diswot", "random", 4.0),
    ("M_s, random teacher", "diswot-semantic", "random", 4.0),
    ("M_r, random teacher", "diswot-relation", "random", 4.0),
    ("DisWOT, T=1", "diswot", "trained", 1.0),
    ("NWOT", "nwot", None, None),
    ("SynFlow", "synflow", None, None),
    ("SNIP", "snip", None, None),
    ("grad-norm", "grad-norm", None, None),
    ("params", "params", None, None),
    ("MACs", "macs", None, None),
]


def pick_students(space, n: int, pool: int, min_macs: float, max_macs: float, in_ch: int, classes: int, example) -> list[dict]:
    rng = random.Random(12345)
    found: dict[str, dict] = {}
    for _ in range(pool):
        genome = space.sample(rng)
        key = space.key(genome)
        if key in found:
            continue
        with torch.device("meta"):  # counting only: no weights allocated or initialised
            module = space.build(genome, in_ch, classes)
            macs = count_macs(module, example.to("meta"))
        if min_macs <= macs <= max_macs:
            found[key] = {"key": key, "genome": genome, "spec": space.spec(genome), "macs": macs, "params": count_params(module)}
    ordered = sorted(found.values(), key=lambda s: (s["macs"], s["key"]))
    logs = [math.log(s["macs"]) for s in ordered]
    chosen: list[dict] = []
    for i in range(n):
        target = logs[0] + (logs[-1] - logs[0]) * i / max(1, n - 1)
        free = [j for j in range(len(ordered)) if ordered[j] not in chosen]
        chosen.append(ordered[min(free, key=lambda j: abs(logs[j] - target))])
    return chosen


def kd_train(space, genome, in_ch, classes, x_train, y_train, t_logits, x_eval, y_eval, seed: int, epochs: int, batch: int = 128) -> dict:
    torch.manual_seed(seed)
    student = space.build(genome, in_ch, classes)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(x_train) // batch
    total = epochs * steps
    warmup = max(1, min(steps, total // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    epoch_seconds = []
    for epoch in range(epochs):
        student.train()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        start = time.perf_counter()
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            logits = student(x_train[idx])
            loss = 0.1 * F.cross_entropy(logits, y_train[idx]) + 0.9 * losses.kd_loss(logits, t_logits[idx], 4.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epoch_seconds.append(time.perf_counter() - start)
    student.eval()
    with torch.no_grad():
        pred = torch.cat([student(x_eval[i:i + 500]).argmax(1) for i in range(0, len(x_eval), 500)])
    return {"accuracy": float((pred == y_eval).float().mean()), "epoch_seconds": epoch_seconds}


def score_all(space, genome, key, in_ch, classes, batches, refs, input_shape, proxy_seed: int) -> tuple[dict, float]:
    """Every column's score for one student and proxy seed, each on a freshly initialised copy; and DisWOT's time."""
    x, y = batches[proxy_seed]
    out, diswot_seconds = {}, 0.0
    for label, name, init, temp in COLUMNS:
        start = time.perf_counter()
        torch.manual_seed(candidate_seed(proxy_seed, key))
        module = space.build(genome, in_ch, classes)
        ref = refs[(proxy_seed, init, temp)] if init else None
        value, _ = proxies.score(name, module, proxies.ProxyInputs(x, y, input_shape, ref))
        if label == "DisWOT":
            diswot_seconds = time.perf_counter() - start
        out[label] = value
        del module
    return out, diswot_seconds


def correlations(xs: list[float], ys: list[float]) -> tuple[float, float]:
    tau = kendalltau(xs, ys).statistic
    rho = spearmanr(xs, ys).statistic
    return float(tau), float(rho)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default=str(ROOT / "samples" / "teachers" / "resnet_mnist.pt"))
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--space", default="resnet")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--min-macs", type=float, default=5e4)
    parser.add_argument("--max-macs", type=float, default=1e7)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--proxy-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads ran 10x slower on the shared 2-core machine
    parser.add_argument("--state", default=str(ROOT / "out" / "proxy_correlation_state.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    teacher = load_model(args.teacher)
    bundle = open_data(args.data, teacher)
    space = get_space(args.space)
    in_ch, input_shape = teacher.input_spec.shape[1], (1, *teacher.input_spec.shape[1:])
    example = torch.zeros(input_shape)
    classes = bundle.num_classes
    students = pick_students(space, args.students, args.pool, args.min_macs, args.max_macs, in_ch, classes, example)

    x_train, y_train = next(iter(bundle.loader("train", batch_size=len(bundle.train))))
    x_eval, y_eval = next(iter(bundle.loader("eval", batch_size=len(bundle.eval))))
    t0 = time.perf_counter()
    with torch.no_grad():
        teacher.module.eval()
        t_logits = torch.cat([teacher.module(x_train[i:i + 500]) for i in range(0, len(x_train), 500)])
    teacher_seconds = time.perf_counter() - t0

    state_path = Path(args.state)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    config = {k: v for k, v in vars(args).items() if k not in ("state", "threads")}
    if state.get("config") != config:
        state = {"config": config, "trained": {}}

    # -- proxies (cheap) -------------------------------------------------------------------------
    batches = {s: fixed_batch(bundle, "calibration", 64, s) for s in args.proxy_seeds}
    refs = {}
    for s in args.proxy_seeds:
        x, y = batches[s]
        for _, _, init, temp in COLUMNS:
            if init and (s, init, temp) not in refs:
                refs[(s, init, temp)] = proxies.teacher_reference(teacher.module, x, y, init, s, temp)
    scores: dict[int, dict[str, dict[str, float]]] = {s: {} for s in args.proxy_seeds}
    diswot_times = []
    for st in students:
        for s in args.proxy_seeds:
            scores[s][st["key"]], sec = score_all(space, st["genome"], st["key"], in_ch, classes, batches, refs, input_shape, s)
            diswot_times.append(sec)

    # -- ground truth (expensive, resumable) -----------------------------------------------------
    for n, st in enumerate(students):
        for seed in args.seeds:
            tag = f"{seed}|{st['key']}"
            if tag in state["trained"]:
                continue
            r = kd_train(space, st["genome"], in_ch, classes, x_train, y_train, t_logits, x_eval, y_eval, seed, args.epochs)
            state["trained"][tag] = r
            state_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(state_path, state)
            print(f"[{time.time() - started:6.0f}s] student {n + 1}/{len(students)} seed {seed}: {st['macs'] / 1e6:7.3f} MMACs "
                  f"acc {r['accuracy'] * 100:.2f}%  epoch {statistics.mean(r['epoch_seconds']):.2f}s", file=sys.stderr, flush=True)

    # -- report ------------------------------------------------------------------------------------
    acc = {st["key"]: statistics.mean(state["trained"][f"{seed}|{st['key']}"]["accuracy"] for seed in args.seeds) for st in students}
    epoch_time = {st["key"]: statistics.mean(sec for seed in args.seeds for sec in state["trained"][f"{seed}|{st['key']}"]["epoch_seconds"])
                  for st in students}
    keys = [st["key"] for st in students]
    print(f"teacher {Path(args.teacher).name}: {count_params(teacher.module)} params, {count_macs(teacher.module, example) / 1e6:.1f} MMACs; "
          f"space {space.name}; data {bundle.name}: {len(x_train)} train, {len(x_eval)} eval")
    print(f"{len(students)} students picked from {args.pool} random draws at even log-MACs quantiles in [{args.min_macs:g}, {args.max_macs:g}]; "
          f"KD {args.epochs} epochs (0.1 CE + 0.9 KD T=4, SGD lr 0.05, 20% warm-up + cosine, batch 128), seeds {args.seeds}; "
          f"proxy batch 64 calibration images, proxy seeds {args.proxy_seeds}\n")
    print(f"{'#':>3} {'params':>9} {'MMACs':>8} " + " ".join(f"{'acc s' + str(s):>8}" for s in args.seeds) + f" {'mean':>7}  architecture")
    for i, st in enumerate(sorted(students, key=lambda s: s["macs"])):
        accs = [state["trained"][f"{seed}|{st['key']}"]["accuracy"] * 100 for seed in args.seeds]
        arch = " ".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in st["spec"]["kwargs"].items())
        print(f"{i + 1:>3} {st['params']:>9} {st['macs'] / 1e6:>8.3f} " + " ".join(f"{a:>8.2f}" for a in accs) + f" {statistics.mean(accs):>7.2f}  {arch}")
    if len(args.seeds) > 1:
        a0 = [state["trained"][f"{args.seeds[0]}|{k}"]["accuracy"] for k in keys]
        a1 = [state["trained"][f"{args.seeds[1]}|{k}"]["accuracy"] for k in keys]
        tau, rho = correlations(a0, a1)
        print(f"\nnoise ceiling: KD seed {args.seeds[0]} vs seed {args.seeds[1]} accuracy ranking: tau {tau:.3f}, rho {rho:.3f}")
    ys = [acc[k] for k in keys]
    print(f"\n{'proxy':<26}{'Kendall tau':>16}{'Spearman rho':>16}   per proxy seed (tau)")
    rows = {}
    for label, *_ in COLUMNS:
        per_seed = [correlations([scores[s][k][label] for k in keys], ys) for s in args.proxy_seeds]
        taus, rhos = [t for t, _ in per_seed], [r for _, r in per_seed]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        rows[label] = statistics.mean(taus)
        print(f"{label:<26}{statistics.mean(taus):>9.3f} ± {sd(taus):.3f}{statistics.mean(rhos):>9.3f} ± {sd(rhos):.3f}   "
              + " ".join(f"{t:.3f}" for t in taus))
    print(f"\nDisWOT proxy time per candidate (build + score, batch 64): median {statistics.median(diswot_times) * 1000:.1f} ms, "
          f"max {max(diswot_times) * 1000:.1f} ms")
    print(f"one KD epoch ({len(x_train)} images, cached teacher logits): median {statistics.median(epoch_time.values()):.2f} s, "
          f"min {min(epoch_time.values()):.2f} s, max {max(epoch_time.values()):.2f} s (teacher logits once: {teacher_seconds:.1f} s)")
    per_student = [epoch_time[k] / statistics.median(diswot_times) for k in keys]
    print(f"KD epoch / DisWOT proxy time: median {statistics.median(per_student):.0f}x, smallest {min(per_student):.0f}x "
          f"(ratio of medians {statistics.median(epoch_time.values()) / statistics.median(diswot_times):.0f}x)")
    best_size = max(rows["params"], rows["MACs"])
    print(f"DisWOT tau {rows['DisWOT']:.3f} vs best of params/MACs {best_size:.3f}: "
          f"{'DisWOT ranks better' if rows['DisWOT'] > best_size else 'DisWOT does NOT beat the size baselines'}; "
          f"target tau >= 0.6: {'met' if rows['DisWOT'] >= 0.6 else 'NOT met'}")
    print(f"total time {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
