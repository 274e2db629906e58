"""Recovery after a prune step: logit KD from the teacher (for outputs that are not class logits, output
matching: a normalised MSE to the teacher's outputs, no labels needed) plus, with layer distillation, a
normalised MSE between each kept block's output and the unpruned model's (1x1 adapters where widths
differ); with teacher forcing, the block beside a removed interval first learns the interval's map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.io.data import DataBundle
from squeeze.measure.analysis import evaluating
from squeeze.measure.fidelity import OutputReference
from squeeze.passes.prune.config import PruneConfig
from squeeze.passes.prune.structure import block_names
from squeeze.train import losses
from squeeze.train.objective import evaluate
from squeeze.train.precision import autocast, resolve_precision
from squeeze.train.trainer import EpochResult, LrScale, ResumableTrainer


nmse = losses.nmse  # per-sample ||s - t||² / ||t||²: every block weighs alike


class BlockAdapters(nn.Module):
    """1x1 convs from a pruned block's channels to the unpruned block's, initialised by least squares
    on calibration features (the kept channels are a subset, so this starts near the right map)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.adapters = nn.ModuleList()
        for s, t in pairs:
            conv = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False) if s.ndim == 4 else nn.Linear(s.shape[1], t.shape[1], bias=False)
            a = s.transpose(0, 1).flatten(1).t() if s.ndim == 4 else s  # [pixels, Cs]
            b = t.transpose(0, 1).flatten(1).t() if t.ndim == 4 else t  # [pixels, Ct]
            a, b = a.double(), b.double()
            gram = a.t() @ a  # ridge least squares: dead (all-zero) channels would make plain lstsq blow up
            ridge = 1e-3 * gram.diagonal().mean().clamp(min=1e-8) * torch.eye(len(gram), dtype=gram.dtype)
            solution = torch.linalg.solve(gram + ridge, a.t() @ b).float()  # [Cs, Ct]
            with torch.no_grad():
                conv.weight.copy_(solution.t().reshape(conv.weight.shape))
            self.adapters.append(conv)

    def forward(self, student: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        total = student[0].new_zeros(())
        for adapter, s, t in zip(self.adapters, student, reference):
            total = total + nmse(adapter(s), t.detach())
        return total / max(1, len(self.adapters))


@dataclass
class TeacherForcing:
    """Train `student_block` to map the pre-step model's input of `first` to its output of `last`."""

    student_block: str
    first: str
    last: str
    reference: nn.Module


def _taps(module: nn.Module, inputs: Sequence[str], outputs: Sequence[str]):
    store: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    hooks = [modules[n].register_forward_pre_hook(lambda _m, inp, n=n: store.__setitem__("in:" + n, inp[0])) for n in inputs]
    hooks += [modules[n].register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__("out:" + n, out)) for n in outputs]
    return store, hooks


class TrainSet:
    """The train split for recovery. Without augmentation the teacher's logits never change, so when the
    split fits in memory they are computed once per run and reused by every step (a teacher forward per
    batch is most of the cost of recovery on a CPU)."""

    MAX_CACHED_VALUES = 64_000_000  # 256 MB of float32 inputs

    def __init__(self, data: DataBundle, teacher: nn.Module, device: str):
        self.data, self.teacher, self.device = data, teacher, device
        self.x = self.y = self._logits = None
        n = len(data.train)
        if n * math.prod(data.sample_shape) <= self.MAX_CACHED_VALUES:
            xs, ys = zip(*(data.train[i] for i in range(n)))
            self.x, self.y = torch.stack(xs), torch.stack(ys) if data.targets else torch.as_tensor(ys, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data.train)

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            with evaluating(self.teacher):
                self._logits = torch.cat([self.teacher(chunk.to(self.device)).float().cpu() for chunk in self.x.split(256)])
        return self._logits

    def batches(self, batch_size: int, seed: int, drop_last: bool, with_logits: bool):
        """(x, y, teacher logits or None) in a seeded shuffled order."""
        if self.x is None:
            for x, y in self.data.loader("train", batch_size=batch_size, shuffle=True, seed=seed, drop_last=drop_last):
                yield x.to(self.device), y.to(self.device), None
            return
        logits = self.logits() if with_logits else None
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(seed))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            yield (self.x[idx].to(self.device), self.y[idx].to(self.device),
                   None if logits is None else logits[idx].to(self.device))


class _Recovery:
    """The batches of one recovery: logit KD (+ CE on labels) from the teacher, per-block layer distillation
    to the unpruned model through adapters, and the teacher-forced interval's map for its first batches."""

    def __init__(self, student: nn.Module, teacher: nn.Module, reference: nn.Module, data: DataBundle, cfg: PruneConfig, epochs: float,
                 seed: int, train: TrainSet, forcing: TeacherForcing | None, logits: bool = True):
        self.student, self.teacher, self.reference, self.cfg, self.seed, self.train, self.forcing = (
            student, teacher, reference, cfg, seed, train, forcing)
        self.logits = logits
        use_labels = data.has_labels if logits else data.targets == "pixel"  # per-pixel labels: CE on a class map
        self.w_kd, self.w_ce = (cfg.alpha, 1.0 - cfg.alpha) if use_labels else (1.0, 0.0)
        modules = dict(student.named_modules())
        self.pairs = [n for n in block_names(reference) if n in modules and not isinstance(modules[n], nn.Identity)] if cfg.layer_distill else []
        self.s_store, s_hooks = _taps(student, [], self.pairs)
        self.r_store, r_hooks = _taps(reference, [], self.pairs)
        self.f_store, f_hooks = ({}, [])
        if forcing is not None:
            self.f_store, f_hooks = _taps(forcing.reference, [forcing.first], [forcing.last])
        self.hooks = [*s_hooks, *r_hooks, *f_hooks]
        # With layer distillation from the unpruned model that is also the teacher, one forward gives both.
        self.teacher_per_batch = bool(self.pairs) and teacher is reference
        self.adapters = self._adapters(data)
        params = [*student.parameters(), *(self.adapters.parameters() if self.adapters is not None else [])]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        self.drop_last = len(train) > cfg.batch_size
        self.per_epoch = max(1, len(train) // cfg.batch_size if self.drop_last else 1)
        self.total = max(1, int(round(epochs * self.per_epoch)))
        self.forced_batches = int(round(cfg.teacher_forced_fraction * self.total)) if forcing is not None else 0
        self.lr_scale = LrScale()
        total = self.total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self.lr_scale.value * 0.5 * (1 + math.cos(math.pi * s / total)))
        self.step = 0
        self.sums: dict[str, float] = {}
        self.precision = resolve_precision(cfg.precision, cfg.device)

    def _adapters(self, data: DataBundle) -> BlockAdapters | None:
        if not self.pairs:
            return None
        cal_x, _ = data.batch("calibration", 128)
        with torch.no_grad(), evaluating(self.student), evaluating(self.reference):
            self.student(cal_x.to(self.cfg.device))
            self.reference(cal_x.to(self.cfg.device))
        return BlockAdapters([(self.s_store["out:" + n], self.r_store["out:" + n]) for n in self.pairs]).to(self.cfg.device)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()

    def losses(self, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if t_logits is None:
                t_logits = self.teacher(x).float()
            if self.pairs and not self.teacher_per_batch:
                self.reference(x)
        logits = self.student(x).float()
        parts = ({"kd": losses.kd_loss(logits, t_logits, self.cfg.temperature) * self.w_kd} if self.logits
                 else {"output": losses.nmse(logits, t_logits) * self.w_kd})
        if self.w_ce > 0:
            parts["ce"] = F.cross_entropy(logits, y) * self.w_ce
        if self.adapters is not None:
            parts["layer"] = self.cfg.feature_weight * self.adapters([self.s_store["out:" + n] for n in self.pairs],
                                                                     [self.r_store["out:" + n] for n in self.pairs])
        if self.step < self.forced_batches:
            f = self.forcing
            with torch.no_grad():
                f.reference(x)  # type: ignore[union-attr]
            block = self.student.get_submodule(f.student_block)  # type: ignore[union-attr]
            parts["teacher_forced"] = nmse(block(self.f_store["in:" + f.first]), self.f_store["out:" + f.last])  # type: ignore[union-attr]
        return parts

    def train_epoch(self, epoch: int) -> EpochResult:
        torch.manual_seed(self.seed * 100_003 + epoch)
        self.student.train()
        sums: dict[str, float] = {}
        with evaluating(self.teacher), evaluating(self.reference):
            for x, y, t_logits in self.train.batches(self.cfg.batch_size, self.seed * 100_003 + epoch, self.drop_last,
                                                     with_logits=not self.teacher_per_batch):
                if self.step >= self.total:
                    break
                with autocast(self.precision):
                    parts = self.losses(x, y, t_logits)
                loss = sum(parts.values())
                if not torch.isfinite(loss):
                    return EpochResult(sums, 1, diverged=True)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                    self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
                self.step += 1
        return EpochResult(sums, 1)


def recover(student: nn.Module, teacher: nn.Module, reference: nn.Module, data: DataBundle, cfg: PruneConfig, epochs: float, *,
            seed: int, train: TrainSet | None = None, forcing: TeacherForcing | None = None, select_best: bool = False,
            progress=lambda m: None, logits: bool = True) -> dict[str, Any]:
    """Fine-tune `student` in place by distillation, through the shared trainer (rollback on divergence,
    best epoch on the calibration split when `select_best`); returns loss figures (and per-epoch calibration scores).
    `logits` False: the output is a map or values, matched to the teacher's and scored by its output NMSE."""
    if epochs <= 0:
        return {"batches": 0}
    for m in (teacher, reference, *([forcing.reference] if forcing is not None else [])):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    run = _Recovery(student, teacher, reference, data, cfg, epochs, seed, train or TrainSet(data, teacher, cfg.device), forcing, logits)
    cal_loader = data.loader("calibration", batch_size=512)
    cal_reference = OutputReference(teacher, cal_loader, data.targets, cfg.device) if select_best and not logits else None

    def score() -> tuple[float, dict[str, Any]]:
        if not select_best:
            return 0.0, {}
        if cal_reference is not None:
            cal = cal_reference.torch(student)
            return -cal["output_nmse"], cal
        cal = evaluate(student, teacher, cal_loader, cfg.device)
        return (cal["student_accuracy"] if cal["student_accuracy"] is not None else cal["agreement"]), cal

    def describe(epoch: int, record: dict[str, Any]) -> str:
        cal = record["calibration"]
        if "output_nmse" in cal:
            return f"recovery epoch {epoch}: calibration output NMSE {cal['output_nmse']:.4g}"
        which = "accuracy" if cal["student_accuracy"] is not None else "agreement"
        return f"recovery epoch {epoch}: calibration {which} {(cal['student_accuracy'] if which == 'accuracy' else cal['agreement']) * 100:.2f}%"

    parts = {"student": student, "optimizer": run.optimizer, "scheduler": run.scheduler, **({"adapters": run.adapters} if run.adapters else {})}
    trainer = ResumableTrainer(what="pruning recovery", epochs=math.ceil(run.total / run.per_epoch), parts=parts, best_of=student,
                               fingerprint="", select=select_best, lr_scale=run.lr_scale, progress=progress, hint=f"lower --lr (now {cfg.lr})")
    try:
        outcome = trainer.run(run.train_epoch, score, describe if select_best else None)
    finally:
        run.close()
    student.eval()
    return {"batches": run.step, **{f"mean_{k}": v / max(1, run.step) for k, v in run.sums.items()},
            **({"best_epoch": outcome.best_epoch, "history": [{"epoch": h["epoch"], "calibration": h["calibration"]} for h in outcome.history]}
               if select_best else {})}


def forcing_for(model_before: nn.Module, removed: str) -> TeacherForcing | None:
    """The kept sibling before the removed block (else after it) replaces the interval it spans."""
    parent_name, _, child = removed.rpartition(".")
    parent = model_before.get_submodule(parent_name) if parent_name else model_before
    if not isinstance(parent, nn.Sequential):
        return None
    names = [n for n, _ in parent.named_children()]
    i = names.index(child)
    full = lambda n: f"{parent_name}.{n}" if parent_name else n  # noqa: E731
    for j in range(i - 1, -1, -1):
        if not isinstance(parent[j], nn.Identity):
            return TeacherForcing(full(names[j]), first=full(names[j]), last=removed, reference=model_before)
    for j in range(i + 1, len(names)):
        if not isinstance(parent[j], nn.Identity):
            return TeacherForcing(full(names[j]), first=removed, last=full(names[j]), reference=model_before)
    return None


class EvalSplit:
    """Accuracy on the eval split and top-1 agreement with the teacher, whose predictions are computed once; for
    outputs that are not class logits, the output NMSE to the teacher (and pixel agreement / accuracy for maps)."""

    def __init__(self, data: DataBundle, teacher: nn.Module, device: str, logits: bool = True):
        from squeeze.measure.accuracy import torch_predictions

        self.loader, self.device = data.loader("eval", batch_size=512), device
        self.reference = None if logits else OutputReference(teacher, self.loader, data.targets, device)
        if self.reference is None:
            self.teacher_pred, self.labels = torch_predictions(teacher, self.loader, device)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        from squeeze.measure.accuracy import accuracy, torch_predictions

        if self.reference is not None:
            ev, teacher = self.reference.torch(model), self.reference.teacher_scores
            return {"samples": ev["samples"], "student_accuracy": ev.get("pixel_accuracy"), "teacher_accuracy": teacher.get("pixel_accuracy"),
                    "agreement": ev.get("pixel_agreement"), "output_nmse": ev["output_nmse"]}
        pred, _ = torch_predictions(model, self.loader, self.device)
        return {"samples": int(len(self.labels)), "student_accuracy": accuracy(pred, self.labels),
                "teacher_accuracy": accuracy(self.teacher_pred, self.labels), "agreement": float((pred == self.teacher_pred).mean())}
