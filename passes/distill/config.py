"""The distill pass's typed config: the single source of `squeeze distill`'s options and the recipe's keys."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from squeeze.errors import UserInputError
from squeeze.io.augment import check_augment
from squeeze.options import cli, parse_pairs
from squeeze.train.objective import ObjectiveConfig, parse_loss
from squeeze.train.precision import check_precision
from squeeze.train.trainer import epoch_steps

STATE_FILE = "resume-state.pt"  # the per-epoch training state (never exposed as an output)
STUDENT_FILE = "student.pt"


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 20
    loss: str = "kd"  # '+'-joined terms, each optionally 'name=weight': e.g. "kd+dist", "kd=0.9+ce=0.1+fitnet"
    temperature: float = field(default=4.0, metadata=cli(flags=("-T",)))
    alpha: float = 0.9  # weight of the logit terms; CE on labels gets 1 - alpha unless given
    label_free: bool = False
    optimizer: str = "sgd"  # "sgd" (Nesterov) or "adamw"
    lr: float | None = None  # default 0.05 for SGD, 2e-3 for AdamW
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    batch_size: int = field(default=128, metadata=cli(flags=("-b",)))
    augment: str = "auto"  # auto (the dataset's default: shift for digits, crop-flip for CIFAR, else none), none, shift, crop-flip
    min_steps: int = 0  # train at least this many optimizer steps: more epochs on a small dataset (recipes that scale with the data)
    compile: str = "auto"  # torch.compile the student and teacher: on, off, or auto (on for runs long enough to repay ~1 min of compiling)
    precision: str = "auto"  # training arithmetic: fp32, bf16 (autocast; weights stay fp32), or auto (bf16 where the CPU has it natively: AMX/AVX512-BF16)
    feature_pairs: tuple[tuple[str, str], ...] = field(default=(), metadata=cli(parse=parse_pairs, help=(
        "FitNet layer pairs student=teacher, comma-separated (default: stage outputs, matched from the end)")))
    seed: int = 0
    device: str = "cpu"  # cpu or cuda (mixed precision on CUDA)
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
        check_precision(self.precision)
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

    def objective(self) -> ObjectiveConfig:
        return ObjectiveConfig(self.loss, self.temperature, self.alpha, self.label_free, self.feature_pairs)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def schedule(self, steps_per_epoch: int) -> int:
        """Epochs to train: a small dataset gets more of them, the same optimizer steps (min_steps)."""
        return max(self.epochs, math.ceil(self.min_steps / max(1, steps_per_epoch)))

    def planned_work(self, train_samples: int) -> tuple[int, int]:
        """(training images, epochs) of a single-process run on a train split of this size (the live view's ETA)."""
        steps_per_epoch, per_step = epoch_steps(train_samples, self.batch_size)
        epochs = self.schedule(steps_per_epoch)
        return epochs * steps_per_epoch * per_step, epochs
