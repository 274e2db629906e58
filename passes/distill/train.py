"""The distill pass's training: the student learns from the teacher's outputs through the shared
objective (squeeze/train/objective.py), epoch by epoch in the shared resumable trainer
(squeeze/train/trainer.py): per-epoch state, resume, rollback on divergence, best epoch on the
calibration split. Under torch.distributed each process trains on its share of every batch."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.augment import apply_augment, resolve_augment
from squeeze.io.data import DataBundle
from squeeze.io.fsutil import write_json_atomic
from squeeze.measure.analysis import count_macs, count_params, evaluating
from squeeze.passes.distill.config import STATE_FILE, STUDENT_FILE, DistillConfig
from squeeze.train.features import layered_teacher
from squeeze.train.objective import RELATION_TERMS, DistillObjective, Trainable, check_student_fits as check_inputs, evaluate, resolve_weights
from squeeze.train.precision import autocast, resolve_precision
from squeeze.train.trainer import EpochResult, LrScale, ResumableTrainer, StepTicker


def _world() -> tuple[int, int]:
    """(rank, world size) when running under torch.distributed, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    import torch.distributed as dist

    if _world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return t.tolist()


def _train_epoch(trainable, teacher, objective, loader, optimizer, scheduler, scaler, cfg: DistillConfig, aug_gen, precision: str,
                 num_classes: int | None, augment: str, tick=lambda step: None) -> tuple[dict[str, float], bool]:
    """One pass over this process's share of the training split; tick(step) after each optimizer step.

    Returns summed per-term losses and whether a loss went non-finite (on any process)."""
    sums: dict[str, float] = {}
    trainable.train()
    with evaluating(teacher):
        for step, (x, y) in enumerate(loader):
            x, y = x.to(cfg.device), y.to(cfg.device)
            if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise UserInputError(f"labels must be in [0, {num_classes}) for a {num_classes}-class teacher; found {int(y.min())}..{int(y.max())}")
            x = apply_augment(augment, x, aug_gen)
            with autocast(precision):
                with torch.no_grad():
                    t_logits = teacher(x) if objective.needs_teacher else None
                loss, parts = trainable(x, None if t_logits is None else t_logits.float(), y)
            if _all_reduce([float(torch.isfinite(loss))], op="min")[0] < 1:
                return sums, True
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            tick(step)
    return sums, False


COMPILE_MIN_IMAGES = 150_000  # below this, ~1 min of torch.compile costs more than its ~1.3x speed-up saves (bench/kd_throughput.py)


def _compiled(trainable: nn.Module, teacher: nn.Module, cfg: DistillConfig, objective: Any, images: int, world: int, progress):
    """torch.compile'd student-with-loss and teacher for long single-process runs without feature taps
    (hooks on submodules and DDP buckets do not survive compilation here), else the modules as they are."""
    wanted = cfg.compile == "on" or (cfg.compile == "auto" and images >= COMPILE_MIN_IMAGES)
    if not wanted or world > 1 or objective.student_tap is not None:
        return trainable, teacher
    progress("compiling the student and teacher with torch.compile (about a minute; pays back on this run's length)")
    return torch.compile(trainable), torch.compile(teacher)


@dataclass
class _Run:
    """One distillation's moving parts, set up once: what the epoch loop and the result need."""

    student: nn.Module
    teacher: nn.Module
    objective: DistillObjective
    step_model: nn.Module
    step_teacher: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    lr_scale: LrScale
    weights: dict[str, float]
    num_classes: int
    train_loader: Any
    steps_per_epoch: int
    epochs: int
    total_steps: int
    augment: str
    precision: str
    drop_last: bool
    rank: int
    world: int
    compiled: bool


def _setup(teacher: ModelArtifact, student: nn.Module, data: DataBundle, cfg: DistillConfig, progress) -> _Run:
    device = cfg.device
    num_classes = check_inputs(teacher, student, data)
    weights = resolve_weights(cfg, data.has_labels)
    # feature and relation terms tap the teacher's layers: a .pt2 is unflattened back to its module hierarchy for them
    taps = any(k in weights for k in ("fitnet", *RELATION_TERMS))
    t_model = (layered_teacher(teacher) if taps else teacher.module).to(device)
    for p in t_model.parameters():
        p.requires_grad_(False)
    student = student.to(device)
    objective = DistillObjective(weights, cfg, t_model, student, teacher.input_spec.example(batch=2).to(device)).to(device)
    rank, world = _world()
    trainable: nn.Module = Trainable(student, objective)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(trainable)  # broadcasts rank 0's initial weights
    params = [*student.parameters(), *objective.parameters()]
    optimizer = (torch.optim.SGD(params, lr=cfg.base_lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay) if cfg.optimizer == "sgd"
                 else torch.optim.AdamW(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay))
    # A ragged last batch of a few samples wrecks batch statistics and batch-relation losses (SP, RKD, DIST's
    # intra term): drop it, as training loops usually do, unless the whole split fits in one batch.
    drop_last = len(data.train) > cfg.batch_size
    loader = _loader_factory(data, cfg, rank, world, drop_last)
    steps_per_epoch = max(1, len(loader(0)))
    epochs = cfg.schedule(steps_per_epoch)
    total_steps, warmup = epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))
    lr_scale = LrScale()  # halved on each divergence rollback

    def schedule(step: int) -> float:
        base = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        return base * lr_scale.value

    step_model, step_teacher = _compiled(trainable, t_model, cfg, objective, total_steps * cfg.batch_size, world, progress)
    return _Run(student, t_model, objective, step_model, step_teacher, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                torch.amp.GradScaler("cuda", enabled=device.startswith("cuda")), lr_scale, weights, num_classes, loader, steps_per_epoch,
                epochs, total_steps, resolve_augment(cfg.augment, data.name), resolve_precision(cfg.precision, device), drop_last, rank, world,
                step_model is not trainable)


def _loader_factory(data: DataBundle, cfg: DistillConfig, rank: int, world: int, drop_last: bool):
    def train_loader(epoch: int):
        seed = cfg.seed * 100_003 + epoch
        if world == 1:
            return data.loader("train", batch_size=cfg.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(data.train, batch_size=cfg.batch_size // world, sampler=sampler, drop_last=drop_last)

    return train_loader


def _fit(run: _Run, data: DataBundle, cfg: DistillConfig, out_dir: Path, progress) -> Any:
    """The epochs, through the shared resumable trainer."""
    use_labels = data.has_labels and not cfg.label_free
    cal_loader = data.loader("calibration", batch_size=512)
    started = time.perf_counter()
    samples = run.steps_per_epoch * cfg.batch_size if run.drop_last else len(data.train)
    ticker = StepTicker(progress, "distillation", run.steps_per_epoch, run.epochs, cfg.batch_size)

    def train_epoch(epoch: int) -> EpochResult:
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # per-epoch seeding: resumed runs reproduce uninterrupted ones
        aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1)
        began = time.perf_counter()
        sums, diverged = _train_epoch(run.step_model, run.step_teacher, run.objective, run.train_loader(epoch), run.optimizer,
                                      run.scheduler, run.scaler, cfg, aug_gen, run.precision,
                                      run.num_classes if use_labels else None, run.augment, lambda step: ticker(epoch, step))
        keys = sorted(sums)
        totals = dict(zip(keys, _all_reduce([sums[k] for k in keys])))  # every process's share of the epoch
        rate = run.steps_per_epoch * cfg.batch_size / max(time.perf_counter() - began, 1e-9)
        return EpochResult(totals, samples, diverged, {"lr": run.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 1),
                                                       "images_per_s": round(rate * run.world, 1)})

    def score() -> tuple[float, dict[str, Any]]:
        cal = evaluate(run.student, run.teacher, cal_loader, cfg.device)
        return (cal["student_accuracy"] if use_labels and cal["student_accuracy"] is not None else cal["agreement"]), cal

    def describe(epoch: int, record: dict[str, Any]) -> str:
        cal = record["calibration"]
        cal_text = (f"cal acc {cal['student_accuracy'] * 100:.2f}%, " if cal["student_accuracy"] is not None else "") + \
            f"agreement {cal['agreement'] * 100:.2f}%"
        terms = ", ".join(f"{k} {record[k]:.4f}" for k in run.weights if k in record)
        return f"epoch {epoch}/{run.epochs} loss {record['loss']:.4f} ({terms}), {cal_text}, {record['images_per_s']:.0f} images/s"

    trainer = ResumableTrainer(what="distillation", epochs=run.epochs, best_of=run.student, fingerprint=cfg.fingerprint() + data.fingerprint,
                               parts={"student": run.student, "objective": run.objective, "optimizer": run.optimizer, "scheduler": run.scheduler},
                               state_path=out_dir / STATE_FILE, max_rollbacks=cfg.max_rollbacks, lr_scale=run.lr_scale, save=run.rank == 0,
                               progress=progress, hint=f"lower --lr (now {cfg.base_lr:.3g} at peak)")
    try:
        return trainer.run(train_epoch, score, describe)
    finally:
        run.objective.close()


def distill(teacher: ModelArtifact, student: nn.Module, data: DataBundle, cfg: DistillConfig, out_dir: Path, *, student_arch: str = "",
            student_kwargs: dict[str, Any] | None = None, progress=lambda message: None) -> dict[str, Any]:
    """Train `student` from `teacher` on `data`; writes out_dir/student.pt and result.json."""
    out_dir = Path(out_dir)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda requested but torch sees no CUDA device")
    rank = _world()[0]
    progress = progress if rank == 0 else (lambda message: None)
    run = _setup(teacher, student, data, cfg, progress)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: bad input above leaves nothing behind
    outcome = _fit(run, data, cfg, out_dir, progress)
    final = evaluate(run.student, run.teacher, data.loader("eval", batch_size=512), cfg.device)
    result = _result(run, teacher, data, cfg, outcome, final, student_arch, student_kwargs)
    if rank == 0:
        _save(run.student, out_dir, teacher, data, cfg, final, student_arch, student_kwargs, result)
    return result


def _result(run: _Run, teacher: ModelArtifact, data: DataBundle, cfg: DistillConfig, outcome: Any, final: dict[str, Any],
            student_arch: str, student_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    use_labels = data.has_labels and not cfg.label_free
    student = run.student.cpu()
    return {
        "student": {"arch": student_arch, "kwargs": student_kwargs or {}, "params": count_params(student),
                    "macs": count_macs(student, teacher.input_spec.example())},
        "teacher": {"source": teacher.source, "sha256": teacher.sha256, "params": count_params(teacher.module.cpu()),
                    "macs": count_macs(teacher.module, teacher.input_spec.example())},
        "eval": final,
        "best_epoch": outcome.best_epoch,
        "selected_on": "calibration split: " + ("student accuracy" if use_labels else "agreement with the teacher"),
        "loss_weights": run.weights,
        "config": asdict(cfg),
        "resolved": {"epochs": run.epochs, "steps": run.total_steps, "steps_per_epoch": run.steps_per_epoch, "augment": run.augment,
                     "compiled": run.compiled, "precision": run.precision,
                     "images_per_s": round(statistics.median(h["images_per_s"] for h in outcome.history if "images_per_s" in h), 1)
                     if outcome.history else None,
                     "resumed_from_epoch": outcome.resumed_from},
        "data": data.describe(),
        "history": outcome.history,
        "rollbacks": outcome.rollbacks,
        "nproc": run.world,
    }


def _save(student: nn.Module, out_dir: Path, teacher: ModelArtifact, data: DataBundle, cfg: DistillConfig, final: dict[str, Any],
          student_arch: str, student_kwargs: dict[str, Any] | None, result: dict[str, Any]) -> None:
    if student_arch:
        from squeeze.io.modelio import save_checkpoint

        meta = {"dataset": data.name if data.source.startswith("bundled:") else None, "split": asdict(data.split),
                "eval_accuracy": final["student_accuracy"], "teacher_agreement": final["agreement"], "distill": asdict(cfg)}
        save_checkpoint(student, out_dir / STUDENT_FILE, arch=student_arch, arch_kwargs=student_kwargs or {},
                        input_spec=teacher.input_spec, metadata=meta)
        result["student_file"] = str(out_dir / STUDENT_FILE)
    write_json_atomic(out_dir / "result.json", result)
