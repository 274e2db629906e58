"""QAT with the teacher, through the shared resumable trainer."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.io.data import DataBundle
from squeeze.train.objective import DistillObjective, ObjectiveConfig, resolve_weights
from squeeze.train.trainer import EpochResult, LrScale, ResumableTrainer, StepTicker
from squeeze.measure.analysis import eval_mode
from squeeze.passes.quantize.backends import QuantBackend

from squeeze.passes.quantize.config import STATE_FILE, QuantizeConfig, evaluate, reference


def _score(ev: dict[str, Any]) -> float:
    if "output_nmse" in ev:  # maps and values: the closer to the teacher's outputs, the better
        return -ev["output_nmse"]
    return ev["accuracy"] if ev["accuracy"] is not None else ev["teacher_agreement"]


def qat(qmodel: nn.Module, backend: QuantBackend, teacher: nn.Module, data: DataBundle, cfg: QuantizeConfig,
        calibration: list[torch.Tensor], work_dir: Path, example: torch.Tensor, progress=lambda m: None, logits: bool = True) -> dict[str, Any]:
    """Train the fake-quant model against the teacher; returns history and the best epoch (0 = PTQ).

    Through the shared resumable trainer: after every epoch the state goes to work_dir/qat_state.pt
    atomically and a re-run with the same config and data picks up there; a non-finite loss rolls
    the epoch back with half the LR once. Each epoch reseeds from (seed, epoch). `logits` False: the output is a
    map or values, distilled by output matching (the logit terms' place) and scored by its output NMSE."""
    ocfg = ObjectiveConfig(loss=cfg.loss, temperature=cfg.temperature, alpha=cfg.alpha)
    weights = resolve_weights(ocfg, data.has_labels if logits else data.targets == "pixel", logits)
    for p in teacher.parameters():
        p.requires_grad_(False)
    objective = DistillObjective(weights, ocfg, teacher, qmodel, example)
    optimizer = torch.optim.SGD([p for p in [*qmodel.parameters(), *objective.parameters()] if p.requires_grad], lr=cfg.lr, momentum=0.9,
                                nesterov=True, weight_decay=cfg.weight_decay)
    train_loader = _qat_loader(data, cfg)
    total = max(1, cfg.epochs * max(1, len(train_loader(0))))
    lr_scale = LrScale()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_scale.value * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    cal_loader = data.loader("calibration", batch_size=512)
    cal_teacher = reference(teacher, cal_loader, data, logits)
    ptq_cal = evaluate(qmodel, cal_teacher, cal_loader)
    started = time.perf_counter()
    ticker = StepTicker(progress, "QAT", max(1, len(train_loader(0))), cfg.epochs, cfg.batch_size)

    def train_epoch(epoch: int) -> EpochResult:
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        qmodel.train()
        eval_mode(teacher)
        sums: dict[str, float] = {}
        seen = 0
        for step, (x, y) in enumerate(train_loader(epoch)):
            with torch.no_grad():
                t_logits = teacher(x) if objective.needs_teacher else None
            loss, parts = objective(qmodel(x).float(), t_logits, y)
            if not torch.isfinite(loss):
                return EpochResult(sums, seen, diverged=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            seen += len(x)
            ticker(epoch, step)
        backend.refresh_weight_scales(qmodel)
        if epoch < cfg.scale_update_epochs:
            backend.recalibrate(qmodel, calibration)
        return EpochResult(sums, seen, extra={"phase": "qat", "scales": "re-estimated" if epoch < cfg.scale_update_epochs else "frozen",
                                              "seconds": round(time.perf_counter() - started, 1)})

    def score() -> tuple[float, dict[str, Any]]:
        cal = evaluate(qmodel, cal_teacher, cal_loader)
        return _score(cal), cal

    def describe(epoch: int, record: dict[str, Any]) -> str:
        if "output_nmse" in record["calibration"]:
            return f"QAT epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f}, calibration output NMSE {record['calibration']['output_nmse']:.4g}"
        acc = record["calibration"]["accuracy"]
        return (f"QAT epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f}, calibration " + (f"acc {acc * 100:.2f}%, " if acc is not None else "")
                + f"agreement {record['calibration']['teacher_agreement'] * 100:.2f}%")

    trainer = ResumableTrainer(what="QAT", epochs=cfg.epochs, best_of=qmodel, fingerprint=cfg.fingerprint() + data.fingerprint,
                               parts={"model": qmodel, "objective": objective, "optimizer": optimizer, "scheduler": scheduler},
                               state_path=work_dir / STATE_FILE, lr_scale=lr_scale, progress=progress, hint=f"lower --lr (now {cfg.lr:g})")
    trainer.with_baseline(_score(ptq_cal), {"phase": "ptq", "calibration": ptq_cal})
    try:
        outcome = trainer.run(train_epoch, score, describe)
    finally:
        objective.close()
    qmodel.eval()
    return {"history": outcome.history, "best_epoch": outcome.best_epoch, "loss_weights": weights}


def _qat_loader(data: DataBundle, cfg: QuantizeConfig):
    train_set = data.train
    if cfg.train_samples and cfg.train_samples < len(train_set):  # a fixed, seeded subset: INT8 QAD needs few steps
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        train_set = torch.utils.data.Subset(train_set, order[: cfg.train_samples])
    drop_last = len(train_set) > cfg.batch_size

    def train_loader(epoch: int):
        return torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                                           generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))

    return train_loader
