"""Build a reusable student pool (issue 19): KD-trained students from a search space, stored once with everything a
ranker could be scored on, so a new proxy or ranker is judged by bench/search_regret.py without training anything.

    nice -n 5 .venv/bin/python bench/student_pool.py --preset mnist [--shard 0/2]          # -> bench/pools/mnist_resnet.json
    SQUEEZE_DATA=../shared/data nice -n 5 .venv/bin/python bench/student_pool.py --preset cifar10 [--shard 1/2]

Per student: the architecture spec, params, MACs, latency on the cpu target (ONNX Runtime, 1 thread, every pool
student and the teacher timed in the same interleaved rounds), every proxy's score per proxy seed (proxy seeds pick
the 64-image calibration batch and the initial weights), the few-shot tier's signals per seed (passes/search/
fewshot.py, exactly as the search runs it: short-KD calibration accuracy and SoTL-E), and the distilled accuracy
per seed after a fixed KD schedule (the ground truth). Students are drawn with a fixed seed and picked at even
quantiles of log(MACs) in the preset's range, before anything is trained or scored.

The expensive part (KD per student and seed) is one result file per row under --work-dir, reused on re-run, so a
pool can be built over several sittings or by two processes at once (--shard i/n: rows i, i+n, ...; 1 torch
thread each, the steadiest use of 2 cores). The pool file is written when every row is present.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from squeeze.api import open_data  # noqa: E402
from squeeze.io.augment import apply_augment, resolve_augment  # noqa: E402
from squeeze.io.fsutil import write_json_atomic  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402
from squeeze.measure.analysis import count_macs, count_params, evaluating  # noqa: E402
from squeeze.passes.search import fewshot, proxies  # noqa: E402
from squeeze.passes.search.pass_ import candidate_seed, fixed_batch  # noqa: E402
from squeeze.passes.search.spaces import get_space  # noqa: E402
from squeeze.train import losses  # noqa: E402
from squeeze.train.precision import autocast, resolve_precision  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from proxy_correlation import pick_students  # noqa: E402  (the same draw: seeded, even quantiles of log MACs)

FEWSHOT_STEPS = (50, 100, 200)  # the few-shot tier's signals at each of these step counts (its cost grows with them)
POOL_PROXIES = ("diswot", "diswot-semantic", "diswot-relation", "nwot", "synflow", "snip", "grad-norm", "zico", "meco", "params", "macs")


@dataclasses.dataclass(frozen=True)
class Preset:
    teacher: str
    data: str
    spaces: tuple[str, ...]  # students are split evenly between them
    min_macs: float
    max_macs: float
    epochs: int  # the ground truth's KD schedule
    train_subset: int | None  # a fixed subset of the train split (None: all of it)
    augment: str  # 'auto': the dataset's default; each epoch's augmented views are fixed (the teacher's logits cached per epoch)


PRESETS = {
    # the teacher is 80.5 MMACs; budgets 1/4 .. 1/32 of its latency span roughly 0.1-10 MMACs of students
    "mnist": Preset("samples/teachers/resnet_mnist.pt", "mnist", ("resnet",), 1e5, 1.2e7, epochs=3, train_subset=None, augment="none"),
    # the teacher is 118 MMACs; a 10k-image training subset, 15 epochs of crop-flip; the resnet space and the
    # VGG-style convnet space (the teacher's own layout) half each
    "cifar10": Preset("samples/teachers/airbench_cifar.pt", "cifar10", ("resnet", "convnet"), 5e5, 3e7, epochs=15, train_subset=10_000,
                      augment="auto"),
}


class GroundTruth:
    """The fixed KD schedule: each epoch's augmented views fixed by (epoch), the teacher's logits of them cached once."""

    def __init__(self, teacher, bundle, preset: Preset, precision: str, work: Path, progress):
        x, y = next(iter(bundle.loader("train", batch_size=len(bundle.train))))
        if preset.train_subset is not None:
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(7))[: preset.train_subset]
            x, y = x[keep], y[keep]
        self.x, self.y, self.epochs, self.precision = x, y, preset.epochs, precision
        self.augment = resolve_augment(preset.augment, bundle.name)
        self.x_eval, self.y_eval = next(iter(bundle.loader("eval", batch_size=len(bundle.eval))))
        cache = work / f"teacher_logits_{self.augment}_{len(x)}_{self.epochs}.pt"
        if cache.exists():
            self.logits = torch.load(cache, weights_only=True)
        else:
            progress(f"teacher logits of {self.epochs} epochs x {len(x)} images ({self.augment})")
            with torch.no_grad(), evaluating(teacher), autocast(precision):
                self.logits = torch.stack([torch.cat([teacher(v).float() for v in self.view(e).split(500)]) for e in range(self.epochs)])
            torch.save(self.logits, cache)

    def view(self, epoch: int, idx: torch.Tensor | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1_000 + epoch)  # the same views for every student and seed
        full = apply_augment(self.augment, self.x, gen) if self.augment != "none" else self.x
        return full if idx is None else full[idx]

    def train(self, student: torch.nn.Module, seed: int, batch: int = 128) -> dict[str, Any]:
        started = time.perf_counter()
        opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        steps = len(self.x) // batch
        total, warm = self.epochs * steps, max(1, self.epochs * steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
        for epoch in range(self.epochs):
            student.train()
            views = self.view(epoch)
            order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                with autocast(self.precision):
                    logits = student(views[idx]).float()
                loss = 0.1 * F.cross_entropy(logits, self.y[idx]) + 0.9 * losses.kd_loss(logits, self.logits[epoch][idx], 4.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        with torch.no_grad(), evaluating(student):
            pred = torch.cat([student(c).argmax(1) for c in self.x_eval.split(500)])
        return {"accuracy": float((pred == self.y_eval).float().mean()), "seconds": round(time.perf_counter() - started, 2)}


def score_proxies(st, in_ch, classes, batch, ref, input_shape, proxy_seed) -> tuple[dict[str, float], dict[str, float]]:
    """Every proxy's score of one freshly initialised student, and the seconds each took (build + init + score)."""
    out, seconds = {}, {}
    for name in POOL_PROXIES:
        began = time.perf_counter()
        torch.manual_seed(candidate_seed(proxy_seed, st["key"]))
        module = get_space(st["space"]).build(st["genome"], in_ch, classes)
        out[name] = proxies.score(name, module, proxies.ProxyInputs(*batch, input_shape, ref))[0]
        seconds[name] = time.perf_counter() - began
    return out, seconds


def measure_latency(students, teacher, input_spec, work: Path, progress) -> dict[str, dict[str, float]]:
    from squeeze.io.onnx_export import ExportConfig, export_onnx
    from squeeze.io.artifacts import ModelArtifact
    from squeeze.measure.latency import MeasureConfig, compare
    from squeeze.targets.cpu import CpuTarget

    path = work / "latency.json"
    if path.exists():
        return json.loads(path.read_text())
    (work / "onnx").mkdir(parents=True, exist_ok=True)
    arts = {"teacher": export_onnx(teacher, work / "onnx" / "teacher.onnx", ExportConfig())}
    for st in students:
        module = get_space(st["space"]).build(st["genome"], input_spec.shape[1], st["classes"]).eval()
        arts[st["key"]] = export_onnx(ModelArtifact(module, input_spec, "", "module", ""), work / "onnx" / f"{file_id(st['key'])}.onnx", ExportConfig())
    progress(f"latency of {len(arts)} models, interleaved, 1 thread")
    result = compare(CpuTarget(), arts, MeasureConfig(block_iterations=100, min_rounds=5, max_rounds=9, time_cap_s=240, threads=1),
                     reference="teacher")
    out = {n: {"p50_ms": s["p50_ms"], "p90_ms": s["p90_ms"]} for n, s in result.stats.items()}
    out["_host"] = {"noisy": result.noisy, "why_noisy": result.why_noisy, "load": result.load, "rounds": result.rounds}
    write_json_atomic(path, out)
    return out


def file_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def row_path(work: Path, key: str, seed: int) -> Path:
    return work / "rows" / f"{file_id(key)}.s{seed}.json"


def train_rows(students, preset: Preset, teacher, bundle, args, work: Path, precision: str, progress) -> None:
    """This shard's (student, seed) rows: the few-shot tier's signals, then the ground-truth KD."""
    in_ch, classes = teacher.input_spec.shape[1], bundle.num_classes
    rows = [(st, seed) for st in students for seed in args.seeds]
    k, n = (int(v) for v in args.shard.split("/"))
    mine = [(st, seed) for i, (st, seed) in enumerate(rows) if i % n == k and not complete(row_path(work, st["key"], seed))]
    if not mine:
        return
    truth = None
    shot_cfg = fewshot.FewShotConfig(steps=max(FEWSHOT_STEPS))
    shots: dict[int, fewshot.FewShotBatches] = {}
    for done, (st, seed) in enumerate(mine):
        path = row_path(work, st["key"], seed)
        row = json.loads(path.read_text()) if path.exists() else {}
        if seed not in shots:
            shots[seed] = fewshot.prepare_batches(teacher.module, bundle, shot_cfg, resolve_augment(preset.augment, bundle.name), precision, seed)
        space = get_space(st["space"])
        row["fewshot"] = {}
        for steps in FEWSHOT_STEPS:  # each from the same seeded initialisation the search gives the candidate
            torch.manual_seed(candidate_seed(seed, st["key"]))
            row["fewshot"][str(steps)] = fewshot.short_kd(space.build(st["genome"], in_ch, classes), shots[seed], shot_cfg, precision, steps)
        row["fewshot_teacher_seconds"] = {str(s): shots[seed].teacher_seconds * s / shot_cfg.steps for s in FEWSHOT_STEPS}
        if "kd" not in row:
            truth = truth or GroundTruth(teacher.module, bundle, preset, precision, work, progress)
            torch.manual_seed(seed)
            row["kd"] = truth.train(space.build(st["genome"], in_ch, classes), seed)
            row["kd"]["images_per_s"] = round(len(truth.x) * truth.epochs / row["kd"]["seconds"], 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, row)
        shot = row["fewshot"][str(max(FEWSHOT_STEPS))]
        progress(f"row {done + 1}/{len(mine)}: {st['macs'] / 1e6:.2f} MMACs seed {seed}: few-shot {shot['accuracy'] * 100:.1f} % "
                 f"({shot['seconds']:.1f} s), KD {row['kd']['accuracy'] * 100:.2f} % ({row['kd']['seconds']:.0f} s)")


def complete(path: Path) -> bool:
    """A row with its ground truth and the few-shot signals at every step count (rows of an earlier layout get the missing ones)."""
    if not path.exists():
        return False
    row = json.loads(path.read_text())
    return "kd" in row and all(str(s) in row.get("fewshot", {}) for s in FEWSHOT_STEPS)


def assemble(students, preset: Preset, teacher, bundle, args, work: Path, progress) -> dict[str, Any]:
    missing = [f"{st['key']} seed {s}" for st in students for s in args.seeds if not complete(row_path(work, st["key"], s))]
    if missing:
        raise SystemExit(f"{len(missing)} rows are not trained yet (first: {missing[0]}); run the shards first")
    in_ch, classes = teacher.input_spec.shape[1], bundle.num_classes
    input_shape = (1, *teacher.input_spec.shape[1:])
    scores: dict[str, dict[str, dict[str, float]]] = {st["key"]: {} for st in students}
    seconds: dict[str, dict[str, dict[str, float]]] = {st["key"]: {} for st in students}
    for ps in args.proxy_seeds:
        batch = fixed_batch(bundle, "calibration", 64, ps)
        ref = proxies.teacher_reference(teacher.module, *batch, "trained", ps, 4.0)
        for st in students:
            scores[st["key"]][str(ps)], seconds[st["key"]][str(ps)] = score_proxies(st, in_ch, classes, batch, ref, input_shape, ps)
    progress("proxies scored")
    latency = measure_latency(students, teacher, teacher.input_spec, work, progress)
    entries = []
    for st in students:
        rows = {str(s): json.loads(row_path(work, st["key"], s).read_text()) for s in args.seeds}
        entries.append({"key": st["key"], "space": st["space"], "spec": st["spec"], "params": st["params"], "macs": st["macs"],
                        "latency_ms": latency[st["key"]], "proxies": scores[st["key"]], "proxy_seconds": seconds[st["key"]],
                        "fewshot": {s: r["fewshot"] for s, r in rows.items()}, "kd": {s: r["kd"] for s, r in rows.items()},
                        "fewshot_teacher_seconds": {s: r["fewshot_teacher_seconds"] for s, r in rows.items()}})
    return {"pool": args.preset, "teacher": {"file": preset.teacher, "params": count_params(teacher.module),
                                             "macs": count_macs(teacher.module, torch.zeros(input_shape)), "latency_ms": latency["teacher"]},
            "data": bundle.describe(), "space": "+".join(preset.spaces), "preset": dataclasses.asdict(preset),
            "schedule": {"kd": f"{preset.epochs} epochs, 0.1 CE + 0.9 KD at T=4, SGD-Nesterov lr 0.05, 5 % warm-up + cosine, batch 128, "
                               f"{'all' if preset.train_subset is None else preset.train_subset} train images, augment "
                               f"{resolve_augment(preset.augment, bundle.name)} (views fixed per epoch), eval split accuracy",
                         "fewshot": {**dataclasses.asdict(fewshot.FewShotConfig()), "steps": list(FEWSHOT_STEPS)},
                         "proxy_batch": "64 calibration images per proxy seed; the seed also picks the initial weights"},
            "host_latency": latency["_host"], "seeds": args.seeds, "proxy_seeds": args.proxy_seeds, "students": entries}


def chosen_students(preset: Preset, args, teacher, bundle, work: Path) -> list[dict[str, Any]]:
    """The pool's students, picked once and kept in the work dir: a later change to a space's rules (what it allows)
    does not change a pool being built."""
    path = work / f"students_{args.students}.json"
    if path.exists():
        return json.loads(path.read_text())
    example = torch.zeros((1, *teacher.input_spec.shape[1:]))
    students = []
    for name in preset.spaces:
        picked = pick_students(get_space(name), args.students // len(preset.spaces), args.draws, preset.min_macs, preset.max_macs,
                               teacher.input_spec.shape[1], bundle.num_classes, example)
        students += [{**st, "space": name, "classes": bundle.num_classes} for st in picked]
    write_json_atomic(path, students)
    return students


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--students", type=int, default=32)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--proxy-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--shard", default="0/1", help="i/n: train rows i, i+n, ... (run n processes at once)")
    parser.add_argument("--assemble", action="store_true", help="score proxies, time every student, write the pool file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    work = args.work_dir or ROOT / "out" / "pools" / args.preset
    out = args.out or ROOT / "bench" / "pools" / f"{args.preset}_{'_'.join(preset.spaces)}.json"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress = lambda m: print(f"[{time.perf_counter() - started:7.0f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    teacher = load_model(ROOT / preset.teacher)
    bundle = open_data(preset.data, teacher)
    students = chosen_students(preset, args, teacher, bundle, work)
    precision = resolve_precision("auto", "cpu")
    macs = [st["macs"] for st in students]
    progress(f"{len(students)} students, {min(macs) / 1e6:.2f}-{max(macs) / 1e6:.2f} MMACs; training in {precision}")
    if not args.assemble:
        train_rows(students, preset, teacher, bundle, args, work, precision, progress)
        return
    pool = assemble(students, preset, teacher, bundle, args, work, progress)
    pool["precision"] = precision
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, pool)
    accs = [statistics.mean(s["kd"][str(x)]["accuracy"] for x in args.seeds) for s in pool["students"]]
    progress(f"wrote {out}: {len(accs)} students, distilled accuracy {min(accs) * 100:.2f}-{max(accs) * 100:.2f} %")


if __name__ == "__main__":
    main()
