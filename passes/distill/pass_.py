"""Distillation pass: train a student from the teacher (KD, DIST, FitNet hints, RKD, SP, CE).

The student is selected on the *calibration* split (held out from training) and reported on the
*eval* split, so the reported accuracy never saw model selection. Training state is saved after
every epoch (atomically) and a re-run with the same config resumes from it; each epoch reseeds
from (seed, epoch), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.train import losses
from squeeze.measure.analysis import count_macs, count_params, evaluating
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.augment import apply_augment, check_augment, resolve_augment
from squeeze.io.data import DataBundle
from squeeze.errors import SqueezeError, UserInputError
from squeeze.measure.accuracy import accuracy, torch_predictions
from squeeze.train.features import FeatureTap, classifier_name, stage_names
from squeeze.io.fsutil import atomic_path, load_resume_state, sha256_file, write_json_atomic
from squeeze.passes.base import Context, PassBase, Requires

LOGIT_TERMS = ("kd", "dist")
FEATURE_TERMS = ("fitnet",)
RELATION_TERMS = ("rkd", "sp")
ALL_TERMS = ("ce", *LOGIT_TERMS, *FEATURE_TERMS, *RELATION_TERMS)
DEFAULT_WEIGHTS = {"fitnet": 1.0, "rkd": 1.0, "sp": 3000.0}  # SP's γ from its paper; RKD weights are inside the term
STATE_FILE = "last.pt"
STUDENT_FILE = "student.pt"


class TrainingDivergedError(SqueezeError):
    exit_code = 1


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 20
    loss: str = "kd"  # '+'-joined terms, each optionally 'name=weight': e.g. "kd+dist", "kd=0.9+ce=0.1+fitnet"
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the logit terms; CE on labels gets 1 - alpha unless given
    label_free: bool = False
    optimizer: str = "sgd"  # "sgd" (Nesterov) or "adamw"
    lr: float | None = None  # default 0.05 for SGD, 2e-3 for AdamW
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    batch_size: int = 128
    augment: str = "auto"  # auto (the dataset's default: shift for digits, crop-flip for CIFAR, else none), none, shift, crop-flip
    min_steps: int = 0  # train at least this many optimizer steps: more epochs on a small dataset (recipes that scale with the data)
    compile: str = "auto"  # torch.compile the student and teacher: on, off, or auto (on for runs long enough to repay ~1 min of compiling)
    feature_pairs: tuple[tuple[str, str], ...] = ()  # (student layer, teacher layer); empty = stage outputs, matched from the end
    seed: int = 0
    device: str = "cpu"
    max_rollbacks: int = 1  # NaN/inf loss: roll back to the last good epoch with half the LR this often, then fail
    nproc: int = 1  # >1: DistributedDataParallel over this many processes (gloo on CPU, NCCL on CUDA); global batch unchanged

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UserInputError("--epochs and --batch-size must be >= 1")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise UserInputError("--alpha must be in [0, 1] and --temperature > 0")
        if self.optimizer not in ("sgd", "adamw"):
            raise UserInputError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        check_augment(self.augment)
        if self.min_steps < 0:
            raise UserInputError("--min-steps must be >= 0")
        if self.compile not in ("auto", "on", "off"):
            raise UserInputError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.lr is not None and self.lr <= 0:
            raise UserInputError("--lr must be > 0")
        if self.nproc < 1 or self.batch_size % self.nproc:
            raise UserInputError(f"--nproc must be >= 1 and divide --batch-size ({self.batch_size})")
        parse_loss(self.loss)

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 2e-3)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def parse_loss(text: str) -> dict[str, float | None]:
    """'kd+dist' -> {'kd': None, 'dist': None}; 'kd=0.9+ce=0.1' -> explicit weights."""
    terms: dict[str, float | None] = {}
    for part in text.replace(",", "+").split("+"):
        name, _, weight = part.strip().partition("=")
        if name not in ALL_TERMS:
            raise UserInputError(f"unknown loss {name!r}; choose from {', '.join(ALL_TERMS)} joined with '+'")
        try:
            terms[name] = float(weight) if weight else None
        except ValueError:
            raise UserInputError(f"loss weight for {name!r} must be a number, got {weight!r}") from None
    return terms  # 'ce' alone is plain supervised training: the baseline distillation must beat


def resolve_weights(cfg: DistillConfig, has_labels: bool) -> dict[str, float]:
    terms = parse_loss(cfg.loss)
    use_labels = has_labels and not cfg.label_free
    if "ce" in terms and not use_labels:
        raise UserInputError("loss 'ce' needs labels; this run is label-free" if cfg.label_free else "loss 'ce' needs a labelled dataset")
    weights: dict[str, float] = {}
    logit_weight = cfg.alpha if use_labels else 1.0
    for name, weight in terms.items():
        if weight is not None:
            weights[name] = weight
        elif name in LOGIT_TERMS:
            weights[name] = logit_weight
        elif name == "ce":
            weights[name] = 1.0 - cfg.alpha if len(terms) > 1 else 1.0  # alone: plain supervised training
        else:
            weights[name] = DEFAULT_WEIGHTS[name]
    if use_labels and "ce" not in terms and any(n in LOGIT_TERMS for n in terms):
        weights["ce"] = 1.0 - cfg.alpha  # Hinton's form: (1 - α)·CE + α·KD
    return {k: v for k, v in weights.items() if v > 0}


def evaluate(student: nn.Module, teacher: nn.Module, loader, device: str) -> dict[str, Any]:
    """Student accuracy (where labelled), teacher accuracy and their top-1 agreement on one split."""
    s_pred, labels = torch_predictions(student, loader, device)
    t_pred, _ = torch_predictions(teacher, loader, device)
    return {
        "samples": int(len(labels)),
        "student_accuracy": accuracy(s_pred, labels),
        "teacher_accuracy": accuracy(t_pred, labels),
        "agreement": float((s_pred == t_pred).mean()) if len(labels) else None,
    }


class _Objective(nn.Module):
    """The weighted sum of loss terms; owns the hint adapters (trained with the student)."""

    def __init__(self, weights: dict[str, float], cfg: DistillConfig, teacher: nn.Module, student: nn.Module, example: torch.Tensor):
        super().__init__()
        self.weights = weights
        self.temperature = cfg.temperature
        self.needs_teacher = any(k != "ce" for k in weights)
        self.teacher_tap = self.student_tap = None
        needs_features = "fitnet" in weights
        needs_embedding = any(n in weights for n in RELATION_TERMS)
        if needs_features or needs_embedding:
            if not list(teacher.named_modules())[1:] or isinstance(teacher, torch.fx.GraphModule):
                raise UserInputError("feature and relation losses need the teacher as an nn.Module: use a squeeze checkpoint or state_dict + --arch, not .pt2/TorchScript")
            pairs = list(cfg.feature_pairs)
            if needs_features and not pairs:
                s_stages, t_stages = stage_names(student, example), stage_names(teacher, example)
                k = min(len(s_stages), len(t_stages))
                if k == 0:
                    raise UserInputError("no 4-D stage outputs found for feature hints; name layers with feature_pairs")
                pairs = list(zip(s_stages[-k:], t_stages[-k:]))
            self.pairs = pairs
            s_embed = classifier_name(student) if needs_embedding else None
            t_embed = classifier_name(teacher) if needs_embedding else None
            if needs_embedding and (s_embed is None or t_embed is None):
                raise UserInputError("relation losses (rkd, sp) need a final nn.Linear in teacher and student")
            self.student_tap = FeatureTap(student, [s for s, _ in pairs], s_embed)
            self.teacher_tap = FeatureTap(teacher, [t for _, t in pairs], t_embed)
        self.hints = None
        if needs_features:
            with torch.no_grad(), evaluating(student), evaluating(teacher):
                student(example)
                teacher(example)
            channels = [(s.shape[1], t.shape[1]) for s, t in zip(self.student_tap.features(), self.teacher_tap.features())]
            self.hints = losses.HintAdapters(channels)

    def forward(self, s_logits: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        w = self.weights
        if "ce" in w:
            parts["ce"] = F.cross_entropy(s_logits, y)
        if "kd" in w:
            parts["kd"] = losses.kd_loss(s_logits, t_logits, self.temperature)
        if "dist" in w:
            parts["dist"] = losses.dist_loss(s_logits, t_logits)
        if "fitnet" in w:
            parts["fitnet"] = self.hints(self.student_tap.features(), self.teacher_tap.features())
        if "rkd" in w:
            parts["rkd"] = losses.rkd_loss(self.student_tap.embedding, self.teacher_tap.embedding)
        if "sp" in w:
            parts["sp"] = losses.sp_loss(self.student_tap.embedding, self.teacher_tap.embedding)
        total = sum(w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def close(self) -> None:
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.close()


class _Trainable(nn.Module):
    """Student + loss (with its adapters) as one module, so DistributedDataParallel syncs all their gradients."""

    def __init__(self, student: nn.Module, objective: _Objective):
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, x: torch.Tensor, t_logits: torch.Tensor | None, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.student(x).float(), t_logits, y)


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


def check_inputs(teacher: ModelArtifact, student: nn.Module, data: DataBundle) -> int:
    if len(data.train) == 0 or len(data.calibration) == 0 or len(data.eval) == 0:
        raise UserInputError(f"dataset {data.name} has an empty split (train {len(data.train)}, calibration {len(data.calibration)}, eval {len(data.eval)})")
    if tuple(data.sample_shape) != tuple(teacher.input_spec.shape[1:]):
        raise UserInputError(f"dataset {data.name} samples have shape {list(data.sample_shape)}, the teacher takes {list(teacher.input_spec.shape[1:])}")
    example = teacher.input_spec.example(batch=2)
    with torch.no_grad(), evaluating(student), evaluating(teacher.module):
        t_out = teacher.module(example)
        try:
            s_out = student(example)
        except Exception as exc:
            raise UserInputError(f"student fails on the teacher's input {list(example.shape)}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(s_out, torch.Tensor) or s_out.shape != t_out.shape:
        raise UserInputError(f"student output shape {list(getattr(s_out, 'shape', []))} does not match the teacher's {list(t_out.shape)}")
    num_classes = t_out.shape[1]
    tensors = getattr(data.full, "tensors", None)  # in-memory data: check every label before training (others: per batch)
    if data.has_labels and tensors is not None and len(tensors) > 1:
        labels = tensors[1]
        if labels.min() < 0 or labels.max() >= num_classes:
            raise UserInputError(f"labels must be in [0, {num_classes}) for a {num_classes}-class teacher; found {int(labels.min())}..{int(labels.max())}")
    return num_classes


def _train_epoch(trainable, teacher, objective, loader, optimizer, scheduler, scaler, cfg: DistillConfig, aug_gen, use_amp: bool,
                 num_classes: int | None, augment: str) -> tuple[dict[str, float], bool]:
    """One pass over this process's share of the training split.

    Returns summed per-term losses and whether a loss went non-finite (on any process)."""
    sums: dict[str, float] = {}
    trainable.train()
    with evaluating(teacher):
        for x, y in loader:
            x, y = x.to(cfg.device), y.to(cfg.device)
            if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise UserInputError(f"labels must be in [0, {num_classes}) for a {num_classes}-class teacher; found {int(y.min())}..{int(y.max())}")
            x = apply_augment(augment, x, aug_gen)
            with torch.autocast("cuda", enabled=use_amp):
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
                sums[k] = sums.get(k, 0.0) + v * len(x)
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


def distill(
    teacher: ModelArtifact,
    student: nn.Module,
    data: DataBundle,
    cfg: DistillConfig,
    out_dir: Path,
    *,
    student_arch: str = "",
    student_kwargs: dict[str, Any] | None = None,
    progress=lambda message: None,
) -> dict[str, Any]:
    """Train `student` from `teacher` on `data`; writes out_dir/student.pt and result.json."""
    out_dir = Path(out_dir)
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda requested but torch sees no CUDA device")
    num_classes = check_inputs(teacher, student, data)
    weights = resolve_weights(cfg, data.has_labels)
    t_model = teacher.module.to(device)
    for p in t_model.parameters():
        p.requires_grad_(False)
    student = student.to(device)
    example = teacher.input_spec.example(batch=2).to(device)
    objective = _Objective(weights, cfg, t_model, student, example).to(device)
    out_dir.mkdir(exist_ok=True)  # only now: bad input above leaves nothing behind
    rank, world = _world()
    trainable: nn.Module = _Trainable(student, objective)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(trainable)  # broadcasts rank 0's initial weights
    progress = progress if rank == 0 else (lambda message: None)
    params = [*student.parameters(), *objective.parameters()]
    lr = cfg.base_lr
    optimizer = (torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay) if cfg.optimizer == "sgd"
                 else torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay))
    # A ragged last batch of a few samples wrecks batch statistics and batch-relation losses (SP, RKD, DIST's
    # intra term): drop it, as training loops usually do, unless the whole split fits in one batch.
    drop_last = len(data.train) > cfg.batch_size
    per_rank_batch = cfg.batch_size // world

    def train_loader(epoch: int):
        seed = cfg.seed * 100_003 + epoch
        if world == 1:
            return data.loader("train", batch_size=cfg.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(data.train, batch_size=per_rank_batch, sampler=sampler, drop_last=drop_last)

    steps_per_epoch = max(1, len(train_loader(0)))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))  # a small dataset gets more epochs, the same steps
    total_steps, warmup = epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))
    augment = resolve_augment(cfg.augment, data.name)
    step_model, step_teacher = _compiled(trainable, t_model, cfg, objective, total_steps * cfg.batch_size, world, progress)
    lr_scale = {"value": 1.0}  # halved on each divergence rollback

    def schedule(step: int) -> float:
        base = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        return base * lr_scale["value"]

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state_path = out_dir / STATE_FILE
    fingerprint = cfg.fingerprint() + data.fingerprint
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": 0, "student": copy.deepcopy(student.state_dict())}
    start_epoch, rollbacks = 0, 0

    state = load_resume_state(state_path, progress, map_location=device)
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise UserInputError(f"{out_dir} holds a distillation run with a different config or data; use another --out or delete {state_path}")
        student.load_state_dict(state["student"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        lr_scale["value"] = float(state["lr_scale"])
        history, best, start_epoch, rollbacks = state["history"], state["best"], int(state["epoch"]), int(state["rollbacks"])
        progress(f"resuming from epoch {start_epoch} of {epochs} ({state_path})")

    use_labels = data.has_labels and not cfg.label_free
    cal_loader = data.loader("calibration", batch_size=512)
    started = time.perf_counter()
    epoch = start_epoch
    while epoch < epochs:
        good = {"student": copy.deepcopy(student.state_dict()), "objective": copy.deepcopy(objective.state_dict()),
                "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict())}
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # per-epoch seeding: resumed runs reproduce uninterrupted ones
        aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1)
        loader = train_loader(epoch)
        epoch_started = time.perf_counter()
        sums, diverged = _train_epoch(step_model, step_teacher, objective, loader, optimizer, scheduler, scaler, cfg, aug_gen, use_amp,
                                      num_classes if use_labels else None, augment)
        rate = steps_per_epoch * cfg.batch_size / max(time.perf_counter() - epoch_started, 1e-9)
        if diverged:
            rollbacks += 1
            if rollbacks > cfg.max_rollbacks:
                objective.close()
                raise TrainingDivergedError(
                    f"training diverged (non-finite loss) in epoch {epoch + 1} again after {cfg.max_rollbacks} rollback(s) with halved LR; "
                    f"lower --lr (now {cfg.base_lr * lr_scale['value']:.3g} at peak) or check the data"
                )
            student.load_state_dict(good["student"])
            objective.load_state_dict(good["objective"])
            optimizer.load_state_dict(good["optimizer"])
            scheduler.load_state_dict(good["scheduler"])
            lr_scale["value"] *= 0.5
            progress(f"epoch {epoch + 1}: non-finite loss; rolled back to the last good state, LR halved (rollback {rollbacks})")
            continue
        cal = evaluate(student, t_model, cal_loader, device)
        score = cal["student_accuracy"] if use_labels and cal["student_accuracy"] is not None else cal["agreement"]
        keys = sorted(sums)
        n = steps_per_epoch * cfg.batch_size if drop_last else len(data.train)
        totals = dict(zip(keys, _all_reduce([sums[k] for k in keys])))  # every process's share of the epoch
        record = {"epoch": epoch + 1, **{k: v / n for k, v in totals.items()}, "lr": optimizer.param_groups[0]["lr"],
                  "calibration": cal, "seconds": round(time.perf_counter() - started, 1), "images_per_s": round(rate * world, 1)}
        history.append(record)
        if score > best["score"]:
            best = {"score": score, "epoch": epoch + 1, "student": copy.deepcopy(student.state_dict())}
        epoch += 1
        state = {"fingerprint": fingerprint, "epoch": epoch, "student": student.state_dict(), "objective": objective.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "lr_scale": lr_scale["value"],
                 "history": history, "best": best, "rollbacks": rollbacks}
        if rank == 0:
            with atomic_path(state_path) as tmp:
                torch.save(state, tmp)
        cal_text = (f"cal acc {cal['student_accuracy'] * 100:.2f}%, " if cal["student_accuracy"] is not None else "") + f"agreement {cal['agreement'] * 100:.2f}%"
        progress(f"epoch {epoch}/{epochs} loss {record['loss']:.4f} ({', '.join(f'{k} {record[k]:.4f}' for k in weights if k in record)}), "
                 f"{cal_text}, {record['images_per_s']:.0f} images/s")
    objective.close()

    student.load_state_dict(best["student"])
    final = evaluate(student, t_model, data.loader("eval", batch_size=512), device)
    student = student.cpu()
    result = {
        "student": {"arch": student_arch, "kwargs": student_kwargs or {}, "params": count_params(student),
                    "macs": count_macs(student, teacher.input_spec.example())},
        "teacher": {"source": teacher.source, "sha256": teacher.sha256, "params": count_params(teacher.module.cpu()),
                    "macs": count_macs(teacher.module, teacher.input_spec.example())},
        "eval": final,
        "best_epoch": best["epoch"],
        "selected_on": "calibration split: " + ("student accuracy" if use_labels else "agreement with the teacher"),
        "loss_weights": weights,
        "config": asdict(cfg),
        "resolved": {"epochs": epochs, "steps": total_steps, "steps_per_epoch": steps_per_epoch, "augment": augment,
                     "compiled": step_model is not trainable,
                     "images_per_s": round(statistics.median(h["images_per_s"] for h in history), 1) if history else None},
        "data": data.describe(),
        "history": history,
        "rollbacks": rollbacks,
    }
    result["nproc"] = world
    if rank != 0:
        return result
    if student_arch:
        from squeeze.io.modelio import save_checkpoint

        meta = {"dataset": data.name if data.source.startswith("bundled:") else None, "split": asdict(data.split),
                "eval_accuracy": final["student_accuracy"], "teacher_agreement": final["agreement"], "distill": asdict(cfg)}
        save_checkpoint(student, out_dir / STUDENT_FILE, arch=student_arch, arch_kwargs=student_kwargs or {},
                        input_spec=teacher.input_spec, metadata=meta)
        result["student_file"] = str(out_dir / STUDENT_FILE)
    write_json_atomic(out_dir / "result.json", result)
    return result


class DistillPass(PassBase):
    name: ClassVar[str] = "distill"
    Config: ClassVar[type] = DistillConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = ModelArtifact
    requires: ClassVar[Requires] = Requires(data=True, logits=True, student=True, teacher=True)
    produces_stage: ClassVar[bool] = True

    def check(self, cfg: DistillConfig, ctx: Context) -> None:
        if ctx.data is not None:
            resolve_weights(cfg, ctx.data.has_labels)

    def run(self, ctx: Context, inp: ModelArtifact, cfg: DistillConfig) -> ModelArtifact:
        """`inp` is the student (architecture + initial weights); ctx.teacher is the teacher."""
        if ctx.teacher is None or ctx.data is None:
            raise UserInputError("distillation needs a teacher and a dataset")
        cfg = replace(cfg, device=ctx.device)
        arch = str(inp.metadata.get("arch", ""))
        run_dir = ctx.run_dir / self.name
        ctx.progress(f"distilling {arch or 'the student'} from the teacher ({cfg.epochs} epochs, loss {cfg.loss})")
        result = distill(ctx.teacher, inp.module, ctx.data, cfg, run_dir, student_arch=arch,
                         student_kwargs=inp.metadata.get("arch_kwargs"), progress=ctx.progress)
        ctx.results[self.name] = {k: v for k, v in result.items() if k != "history"}
        student_file = run_dir / STUDENT_FILE
        return ModelArtifact(inp.module.eval(), ctx.teacher.input_spec, str(student_file), "checkpoint",
                             sha256_file(student_file) if student_file.exists() else "",
                             {"arch": arch, "arch_kwargs": inp.metadata.get("arch_kwargs")},
                             [*inp.provenance, {"pass": "distill", "config": asdict(cfg)}])
