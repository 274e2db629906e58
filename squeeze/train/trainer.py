"""The one resumable epoch loop, shared by every pass that trains (distill, prune recovery, QAT).

What it owns, so no pass writes it again:
- resume: after every epoch the state of every stateful part (model, loss adapters, optimizer,
  scheduler) plus history, best epoch and counters is saved atomically; a re-run with the same
  fingerprint continues from there, and a state it cannot read is discarded (one line) and the
  run starts over. Each epoch is seeded from (seed, epoch) by the caller, so a resumed run
  reproduces an uninterrupted one.
- divergence: a non-finite loss rolls the epoch back to its starting state with the learning
  rate halved; a second time (by default) fails with a clear message.
- selection: after every epoch `evaluate` scores the model on the calibration split; the best
  epoch's weights are restored at the end (the eval split never takes part).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from squeeze.errors import SqueezeError, UserInputError
from squeeze.io.fsutil import atomic_path, load_resume_state


class TrainingDivergedError(SqueezeError):
    exit_code = 1


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class LrScale:
    """Multiplies the schedule's learning rate; halved on each rollback."""

    value: float = 1.0


@dataclass
class EpochResult:
    sums: dict[str, float]  # summed per-term losses over the epoch's samples
    samples: int
    diverged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainOutcome:
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    rollbacks: int
    epochs: int
    resumed_from: int


class ResumableTrainer:
    def __init__(self, *, what: str, epochs: int, parts: dict[str, Stateful], best_of: torch.nn.Module, fingerprint: str,
                 state_path: Path | None = None, max_rollbacks: int = 1, lr_scale: LrScale | None = None, save: bool = True,
                 progress: Callable[[str], None] = lambda m: None, hint: str = "lower --lr", select: bool = True):
        self.what, self.epochs, self.parts, self.best_of = what, epochs, parts, best_of
        self.fingerprint, self.state_path, self.max_rollbacks = fingerprint, state_path, max_rollbacks
        self.lr_scale = lr_scale or LrScale()
        self.save, self.progress, self.hint, self.select = save, progress, hint, select  # select: restore the best epoch at the end
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"score": float("-inf"), "epoch": 0, "state": copy.deepcopy(best_of.state_dict())}
        self.rollbacks, self.start = 0, 0

    def with_baseline(self, score: float, record: dict[str, Any]) -> ResumableTrainer:
        """Epoch 0 (e.g. PTQ before QAT) competes for best like any trained epoch."""
        self.history.append({"epoch": 0, **record})
        self.best = {"score": score, "epoch": 0, "state": copy.deepcopy(self.best_of.state_dict())}
        return self

    def _resume(self) -> None:
        if self.state_path is None:
            return
        state = load_resume_state(self.state_path, self.progress)
        if state is None:
            return
        if state.get("fingerprint") != self.fingerprint:
            raise UserInputError(f"{self.state_path.parent} holds a {self.what} run with a different config or data; "
                                 f"use another output or delete {self.state_path}")
        for name, part in self.parts.items():
            part.load_state_dict(state["parts"][name])
        self.history, self.best = state["history"], state["best"]
        self.start, self.rollbacks = int(state["epoch"]), int(state["rollbacks"])
        self.lr_scale.value = float(state["lr_scale"])
        self.progress(f"{self.what}: resuming after epoch {self.start} of {self.epochs} ({self.state_path})")

    def _checkpoint(self, epoch: int) -> None:
        if self.state_path is None or not self.save:
            return
        state = {"fingerprint": self.fingerprint, "epoch": epoch, "parts": {n: p.state_dict() for n, p in self.parts.items()},
                 "history": self.history, "best": self.best, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale.value}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def run(self, train_epoch: Callable[[int], EpochResult], evaluate: Callable[[], tuple[float, dict[str, Any]]],
            describe: Callable[[int, dict[str, Any]], str] | None = None) -> TrainOutcome:
        """train_epoch(epoch) trains one epoch; evaluate() -> (score, calibration figures) after it."""
        self._resume()
        resumed_from = self.start
        epoch = self.start
        while epoch < self.epochs:
            snapshot = {n: copy.deepcopy(p.state_dict()) for n, p in self.parts.items()}
            result = train_epoch(epoch)
            if result.diverged:
                self._roll_back(epoch, snapshot)
                continue
            score, cal = evaluate()
            record = {"epoch": epoch + 1, **{k: v / max(1, result.samples) for k, v in result.sums.items()}, **result.extra,
                      "calibration": cal}
            self.history.append(record)
            if score > self.best["score"]:
                self.best = {"score": score, "epoch": epoch + 1, "state": copy.deepcopy(self.best_of.state_dict())}
            epoch += 1
            self._checkpoint(epoch)
            if describe is not None:
                self.progress(describe(epoch, record))
        if self.select:
            self.best_of.load_state_dict(self.best["state"])
        return TrainOutcome(self.history, int(self.best["epoch"]), float(self.best["score"]), self.rollbacks, self.epochs, resumed_from)

    def _roll_back(self, epoch: int, snapshot: dict[str, dict[str, Any]]) -> None:
        self.rollbacks += 1
        if self.rollbacks > self.max_rollbacks:
            raise TrainingDivergedError(
                f"{self.what} diverged (non-finite loss) in epoch {epoch + 1} again after {self.max_rollbacks} rollback(s) with halved LR; "
                f"{self.hint} or check the data")
        for name, part in self.parts.items():
            part.load_state_dict(snapshot[name])
        self.lr_scale.value *= 0.5
        self.progress(f"{self.what} epoch {epoch + 1}: non-finite loss; rolled back to the last good state, LR halved (rollback {self.rollbacks})")


def epoch_steps(samples: int, batch_size: int) -> tuple[int, int]:
    """(optimizer steps per epoch, images per step) of the training loaders on a split of `samples`: a split larger
    than one batch drops its ragged last batch, a smaller one is a single batch."""
    return (samples // batch_size, batch_size) if samples > batch_size else (1, samples)


class StepTicker:
    """Progress inside a long epoch, time-throttled: 'what epoch e/E, step s/S, N images/s'. The live view reads the
    nested fraction, so it has an ETA a few seconds in, not only after the first (possibly 10-minute) epoch; an
    epoch shorter than `first_after_s` says nothing but its own end-of-epoch line."""

    def __init__(self, progress: Callable[[str], None], what: str, steps_per_epoch: int, epochs: int, batch_size: int,
                 first_after_s: float = 10.0, every_s: float = 30.0):
        self.progress, self.what = progress, what
        self.steps_per_epoch, self.epochs, self.batch_size = max(1, steps_per_epoch), epochs, batch_size
        self.first_after_s, self.every_s = first_after_s, every_s
        self.began: float | None = None  # the first step this run saw (a resumed run starts past 0): rates count from here
        self.began_step = 0
        self.epoch = -1
        self.next_at = 0.0

    def __call__(self, epoch: int, step_in_epoch: int) -> None:
        """After optimizer step `step_in_epoch` (0-based) of `epoch` (0-based)."""
        now = time.perf_counter()
        done = epoch * self.steps_per_epoch + step_in_epoch + 1
        if self.began is None:
            self.began, self.began_step = now, done
        if epoch != self.epoch:
            self.epoch, self.next_at = epoch, now + self.first_after_s
        if now < self.next_at or step_in_epoch + 1 >= self.steps_per_epoch or done == self.began_step:
            return
        self.next_at = now + self.every_s
        rate = (done - self.began_step) * self.batch_size / max(now - self.began, 1e-9)
        self.progress(f"{self.what} epoch {epoch + 1}/{self.epochs}, step {step_in_epoch + 1}/{self.steps_per_epoch}, {rate:.0f} images/s")
