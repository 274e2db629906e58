"""The prune pass's typed config: the single source of `squeeze prune`'s options and the recipe's keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squeeze.errors import UserInputError
from squeeze.options import cli, parse_list
from squeeze.train.precision import check_precision

IMPORTANCES = ("l2", "taylor", "bn")
LATENCY_STATS = ("p50", "min", "mean")


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.5  # at most this fraction of each layer's channels is removed over the whole run
    steps: int = 4  # prune + recover rounds (the most; the run stops once the budget is met)
    importance: str = "l2"  # l2 (group L2 magnitude), taylor (|w·dL/dw| on calibration data), bn (BatchNorm |γ|)
    depth: bool = False  # also consider removing whole identity-shaped residual blocks
    latency_budget_ms: float | None = None  # target latency (median) on the target
    latency_budget_ratio: float | None = None  # ... or as a fraction of the input model's latency measured in the same run
    candidates: int = 3  # width candidates per step when a budget is set
    min_gain: float = 0.02  # a step must be at least this much faster than the current model (median per-round ratio)
    layer_distill: bool = True  # per-block normalised MSE to the unpruned model (+ logit KD); off: logit KD only
    feature_weight: float = 1.0
    teacher_forced: bool = False  # train the block beside a removed interval on the pre-step model's input first
    teacher_forced_fraction: float = 0.5  # share of a depth step's recovery spent teacher-forced
    alpha: float = 0.9  # logit-KD weight; CE on labels gets 1 - alpha
    temperature: float = 4.0
    recover_epochs: float = 1.0  # recovery after each accepted step (fractions of an epoch allowed)
    final_epochs: float = 2.0  # recovery after the last step; the best epoch is picked on the calibration split
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = field(default=128, metadata=cli(flags=("-b",)))
    seed: int = 0
    device: str = "cpu"  # cpu or cuda (recovery training)
    precision: str = "auto"  # recovery arithmetic: fp32, bf16 (autocast; weights stay fp32), or auto (bf16 where the CPU has it natively)
    plan: tuple[str, ...] = field(default=(), metadata=cli(parse=parse_list, help=(
        "replay these steps, comma-separated (width:0.25,depth:stages.1.1), instead of searching")))
    profile_rounds: int = 5  # interleaved rounds per step measurement
    profile_iterations: int = 100
    profile_warmup: int = 10
    profile_threads: int | None = field(default=None, metadata=cli(names=("--threads",), help="profiling threads (default: the target's)"))
    final_rounds: int = 5  # the closing input-vs-pruned measurement
    final_iterations: int = 200
    exporter: str = "dynamo"  # ONNX exporter for every timed graph: the one `squeeze export` ships (legacy is faster)
    latency_stat: str = "p50"  # per-round statistic compared: p50, or min (robust when a shared CPU is oversubscribed)
    channel_multiple: int | None = None  # widths in whole blocks of this many channels (default: the target's; cpu: 16 with AVX-512, else 8)

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise UserInputError(f"--ratio must be in (0, 1) (the fraction of channels removed), got {self.ratio}")
        if self.steps < 1 or self.candidates < 1:
            raise UserInputError("--steps and --candidates must be >= 1")
        check_precision(self.precision)
        if self.importance not in IMPORTANCES:
            raise UserInputError(f"--importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if self.latency_budget_ms is not None and self.latency_budget_ratio is not None:
            raise UserInputError("give the latency budget either in time (e.g. 1ms) or relative to the input (e.g. 0.5x), not both")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UserInputError("--latency-budget must be > 0")
        if self.latency_budget_ratio is not None and not 0.0 < self.latency_budget_ratio < 1.0:
            raise UserInputError(f"a relative latency budget must be in (0, 1)x of the input's latency, got {self.latency_budget_ratio}x")
        if not 0.0 <= self.min_gain < 1.0 or not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise UserInputError("--min-gain must be in [0, 1), --alpha in [0, 1] and --temperature > 0")
        if self.recover_epochs < 0 or self.final_epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise UserInputError("--recover-epochs and --final-epochs must be >= 0, --lr > 0 and --batch-size >= 1")
        if self.channel_multiple is not None and self.channel_multiple < 1:
            raise UserInputError(f"--channel-multiple must be >= 1, got {self.channel_multiple}")
        if not 0.0 <= self.teacher_forced_fraction <= 1.0 or self.feature_weight < 0:
            raise UserInputError("teacher_forced_fraction must be in [0, 1] and feature_weight >= 0")
        if min(self.profile_rounds, self.final_rounds) < 1 or min(self.profile_iterations, self.final_iterations) < 2:
            raise UserInputError("profile rounds must be >= 1 and iterations >= 2")
        if self.latency_stat not in LATENCY_STATS:
            raise UserInputError(f"--latency-stat must be one of {', '.join(LATENCY_STATS)}, got {self.latency_stat!r}")
        if self.exporter not in ("legacy", "dynamo"):
            raise UserInputError(f"exporter must be legacy or dynamo, got {self.exporter!r}")
        for action in self.plan:
            parse_action(action)

    @property
    def has_budget(self) -> bool:
        return self.latency_budget_ms is not None or self.latency_budget_ratio is not None

    def width_schedule(self) -> list[float]:
        """Nominal cumulative channel ratio after each step (Torch-Pruning's linear scheduler)."""
        return [self.ratio * (k + 1) / self.steps for k in range(self.steps)]


def parse_action(text: str) -> tuple[str, Any]:
    kind, _, arg = str(text).partition(":")
    if kind == "width":
        try:
            value = float(arg)
        except ValueError:
            value = -1.0
        if not 0.0 < value < 1.0:
            raise UserInputError(f"plan step {text!r}: width needs a cumulative channel ratio in (0, 1), e.g. width:0.25")
        return kind, value
    if kind == "depth" and arg:
        return kind, arg
    raise UserInputError(f"plan step {text!r} must be width:RATIO or depth:BLOCK_NAME")
