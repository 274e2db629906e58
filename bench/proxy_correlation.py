"""Do training-free proxies rank students the way distillation does? Kendall tau / Spearman rho on MNIST.

    nice -n 10 python bench/proxy_correlation.py [--students 20] [--seeds 0 1] [--proxy-seeds 0 1] [--epochs 3]
    python bench/proxy_correlation.py --from-pool bench/pools/cifar10_resnet.json    # the table from a stored student pool

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

from squeeze.train import losses  # noqa: E402
from squeeze.measure.analysis import count_macs, count_params  # noqa: E402
from squeeze.api import open_data  # noqa: E402
from squeeze.io.fsutil import write_json_atomic  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402
from squeeze.passes.search import proxies  # noqa: E402
from squeeze.passes.search.pass_ import candidate_seed, fixed_batch  # noqa: E402
from squeeze.passes.search.spaces import get_space  # noqa: E402

# Proxy columns, in print order. The DisWOT family is computed from one diswot_terms() call per
# teacher reference; "(post-hoc)" marks variants added after the first table, all from the paper
# or its released code, never tuned to this ground truth.
COLUMNS = [
    "DisWOT", "DisWOT M_s (semantic)", "DisWOT M_r (relation)",
    "DisWOT, random teacher", "M_s, random teacher", "M_r, random teacher",
    "DisWOT, T=1",
    "DisWOT, paper scale M_s+M_r/B (post-hoc)",
    "DisWOT, M_r pooled (post-hoc)", "M_r pooled (post-hoc)",
    "DisWOT, N(0,1) init (post-hoc)", "M_s, N(0,1) init (post-hoc)", "M_r, N(0,1) init (post-hoc)",
    "NWOT", "SynFlow", "SNIP", "grad-norm", "params", "MACs",
]
BASELINES = {"NWOT": "nwot", "SynFlow": "synflow", "SNIP": "snip", "grad-norm": "grad-norm", "params": "params", "MACs": "macs"}


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


def teacher_references(teacher, x, y, seed: int) -> dict[str, proxies.TeacherReference]:
    gaussian = proxies.gaussian_init(proxies.random_teacher(teacher, seed))
    return {"trained": proxies.teacher_reference(teacher, x, y, "trained", seed, 4.0),
            "random": proxies.teacher_reference(teacher, x, y, "random", seed, 4.0),
            "trained-T1": proxies.teacher_reference(teacher, x, y, "trained", seed, 1.0),
            "gaussian": proxies.reference_from(gaussian, x, y, 4.0, batch_statistics=True, init="random N(0,1)")}


def score_all(space, genome, key, in_ch, classes, batch, refs, input_shape, proxy_seed: int) -> dict[str, float]:
    """Every column's score (higher = better) for one student and proxy seed, each on a freshly initialised copy."""
    x, y = batch

    def fresh(gaussian: bool = False):
        torch.manual_seed(candidate_seed(proxy_seed, key))
        module = space.build(genome, in_ch, classes)
        return proxies.gaussian_init(module) if gaussian else module

    out: dict[str, float] = {}
    with proxies.deterministic():
        t = proxies.diswot_terms(fresh(), x, y, refs["trained"])
        out |= {"DisWOT": -(t["semantic"] + t["relation"]), "DisWOT M_s (semantic)": -t["semantic"], "DisWOT M_r (relation)": -t["relation"],
                "DisWOT, paper scale M_s+M_r/B (post-hoc)": -(t["semantic"] + t["relation"] / len(x)),
                "DisWOT, M_r pooled (post-hoc)": -(t["semantic"] + t["relation_pooled"]), "M_r pooled (post-hoc)": -t["relation_pooled"]}
        t = proxies.diswot_terms(fresh(), x, y, refs["random"])
        out |= {"DisWOT, random teacher": -(t["semantic"] + t["relation"]), "M_s, random teacher": -t["semantic"], "M_r, random teacher": -t["relation"]}
        t = proxies.diswot_terms(fresh(), x, y, refs["trained-T1"])
        out["DisWOT, T=1"] = -(t["semantic"] + t["relation"])
        t = proxies.diswot_terms(fresh(gaussian=True), x, y, refs["gaussian"])
        out |= {"DisWOT, N(0,1) init (post-hoc)": -(t["semantic"] + t["relation"]), "M_s, N(0,1) init (post-hoc)": -t["semantic"],
                "M_r, N(0,1) init (post-hoc)": -t["relation"]}
    for label, name in BASELINES.items():
        out[label] = proxies.score(name, fresh(), proxies.ProxyInputs(x, y, input_shape))[0]
    return out


def diswot_seconds(space, genome, key, in_ch, classes, batch, ref, input_shape, repeats: int = 3) -> tuple[float, float]:
    """(build + score, score only) seconds of the search's DisWOT proxy: medians of `repeats` runs."""
    x, y = batch
    full, score_only = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.manual_seed(candidate_seed(0, key))
        module = space.build(genome, in_ch, classes)
        built = time.perf_counter()
        proxies.score("diswot", module, proxies.ProxyInputs(x, y, input_shape, ref))
        end = time.perf_counter()
        full.append(end - start)
        score_only.append(end - built)
    return statistics.median(full), statistics.median(score_only)


def correlations(xs: list[float], ys: list[float]) -> tuple[float, float]:
    tau = kendalltau(xs, ys).statistic
    rho = spearmanr(xs, ys).statistic
    return float(tau), float(rho)


def from_pool(path: Path) -> None:
    """tau / rho of every proxy the pool stores against its seed-mean distilled accuracy (bench/student_pool.py built
    it: the students, their KD schedule and the proxy seeds are the pool's), with the KD seed-vs-seed noise ceiling."""
    pool = json.loads(path.read_text())
    students, seeds, proxy_seeds = pool["students"], [str(s) for s in pool["seeds"]], [str(s) for s in pool["proxy_seeds"]]
    accuracy = [statistics.mean(st["kd"][s]["accuracy"] for s in seeds) for st in students]
    print(f"pool {path.name}: {len(students)} students of the {pool['space']} space, teacher {pool['teacher']['file']}; "
          f"ground truth: {pool['schedule']['kd']}; KD seeds {seeds}, proxy seeds {proxy_seeds}")
    if len(seeds) > 1:
        tau, rho = correlations([st["kd"][seeds[0]]["accuracy"] for st in students], [st["kd"][seeds[1]]["accuracy"] for st in students])
        print(f"noise ceiling: KD seed {seeds[0]} vs seed {seeds[1]} accuracy ranking: tau {tau:.3f}, rho {rho:.3f}")
    print(f"\n{'proxy':<20}{'Kendall tau':>16}{'Spearman rho':>16}   per proxy seed (tau)")
    for name in students[0]["proxies"][proxy_seeds[0]]:
        per_seed = [correlations([st["proxies"][ps][name] for st in students], accuracy) for ps in proxy_seeds]
        taus, rhos = [t for t, _ in per_seed], [r for _, r in per_seed]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        print(f"{name:<20}{statistics.mean(taus):>9.3f} ± {sd(taus):.3f}{statistics.mean(rhos):>9.3f} ± {sd(rhos):.3f}   "
              + " ".join(f"{t:.3f}" for t in taus))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-pool", type=Path, help="print the table from a stored pool (bench/pools/*.json) instead of training")
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
    if args.from_pool:
        from_pool(args.from_pool)
        return
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
    with torch.no_grad():
        teacher.module.eval()
        t_logits = torch.cat([teacher.module(x_train[i:i + 500]) for i in range(0, len(x_train), 500)])

    state_path = Path(args.state)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    config = {k: v for k, v in vars(args).items() if k not in ("state", "threads")}
    if state.get("config") != config:
        state = {"config": config, "trained": {}}

    # -- proxies (cheap) -------------------------------------------------------------------------
    batches = {s: fixed_batch(bundle, "calibration", 64, s) for s in args.proxy_seeds}
    refs = {s: teacher_references(teacher.module, *batches[s], s) for s in args.proxy_seeds}
    scores: dict[int, dict[str, dict[str, float]]] = {s: {} for s in args.proxy_seeds}
    for st in students:
        for s in args.proxy_seeds:
            scores[s][st["key"]] = score_all(space, st["genome"], st["key"], in_ch, classes, batches[s], refs[s], input_shape, s)
    print(f"[{time.time() - started:6.0f}s] proxies scored", file=sys.stderr, flush=True)

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

    # -- cost, interleaved: the proxy and one KD epoch of the same student back to back ---------------
    timing = []
    for n, st in enumerate(sorted(students, key=lambda s: s["macs"])):
        before = diswot_seconds(space, st["genome"], st["key"], in_ch, classes, batches[args.proxy_seeds[0]], refs[args.proxy_seeds[0]]["trained"],
                                input_shape)
        epoch = kd_train(space, st["genome"], in_ch, classes, x_train, y_train, t_logits, x_eval, y_eval, 0, 1)["epoch_seconds"][0]
        after = diswot_seconds(space, st["genome"], st["key"], in_ch, classes, batches[args.proxy_seeds[0]], refs[args.proxy_seeds[0]]["trained"],
                               input_shape)
        timing.append({"macs": st["macs"], "proxy": statistics.mean([before[0], after[0]]), "score_only": statistics.mean([before[1], after[1]]),
                       "epoch": epoch})
        if n == len(students) // 2:  # the teacher's forward pass over the train split, which squeeze distill pays every epoch
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, len(x_train), 128):
                    teacher.module(x_train[i:i + 128])
            teacher_epoch = time.perf_counter() - t0
    print(f"[{time.time() - started:6.0f}s] interleaved timing done", file=sys.stderr, flush=True)

    # -- report ------------------------------------------------------------------------------------
    acc = {st["key"]: statistics.mean(state["trained"][f"{seed}|{st['key']}"]["accuracy"] for seed in args.seeds) for st in students}
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
    print(f"\n{'proxy':<42}{'Kendall tau':>16}{'Spearman rho':>16}   per proxy seed (tau)")
    rows = {}
    for label in COLUMNS:
        per_seed = [correlations([scores[s][k][label] for k in keys], ys) for s in args.proxy_seeds]
        taus, rhos = [t for t, _ in per_seed], [r for _, r in per_seed]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        rows[label] = statistics.mean(taus)
        print(f"{label:<42}{statistics.mean(taus):>9.3f} ± {sd(taus):.3f}{statistics.mean(rhos):>9.3f} ± {sd(rhos):.3f}   "
              + " ".join(f"{t:.3f}" for t in taus))
    params = [st["params"] for st in students]
    depth = [sum(st["spec"]["kwargs"].get("blocks", st["spec"]["kwargs"].get("depths", [0]))) for st in students]
    print("\nwhat the DisWOT terms track (tau against the student's params and its number of blocks, proxy seed "
          f"{args.proxy_seeds[0]}):")
    for label in ("DisWOT", "DisWOT M_s (semantic)", "DisWOT M_r (relation)"):
        v = [scores[args.proxy_seeds[0]][k][label] for k in keys]
        print(f"  {label:<24} params {correlations(v, params)[0]:+.3f}   blocks {correlations(v, depth)[0]:+.3f}")
    proxy_t = [t["proxy"] for t in timing]
    score_t = [t["score_only"] for t in timing]
    epoch_t = [t["epoch"] for t in timing]
    ratio = [t["epoch"] / t["proxy"] for t in timing]
    ratio_full = [(t["epoch"] + teacher_epoch) / t["proxy"] for t in timing]
    print("\ncost, measured interleaved per student (proxy = the search's DisWOT call: build + init + score, batch 64; median of 3, before and after the epoch):")
    print(f"  DisWOT proxy per candidate: median {statistics.median(proxy_t) * 1000:.1f} ms (score only {statistics.median(score_t) * 1000:.1f} ms), "
          f"max {max(proxy_t) * 1000:.1f} ms")
    print(f"  one KD epoch, {len(x_train)} images, cached teacher logits: median {statistics.median(epoch_t):.2f} s, min {min(epoch_t):.2f} s, "
          f"max {max(epoch_t):.2f} s; the teacher's forward pass over them adds {teacher_epoch:.2f} s in squeeze distill")
    print(f"  KD epoch / proxy, cached logits: median {statistics.median(ratio):.0f}x, worst {min(ratio):.0f}x; "
          f"with the teacher's forward pass (as squeeze distill runs it): median {statistics.median(ratio_full):.0f}x, worst {min(ratio_full):.0f}x")
    best_size = max(rows["params"], rows["MACs"])
    print(f"DisWOT tau {rows['DisWOT']:.3f} vs best of params/MACs {best_size:.3f}: "
          f"{'DisWOT ranks better' if rows['DisWOT'] > best_size else 'DisWOT does NOT beat the size baselines'}; "
          f"target tau >= 0.6: {'met' if rows['DisWOT'] >= 0.6 else 'NOT met'}")
    print(f"total time {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
