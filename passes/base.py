"""The pass protocol, what a pass declares about itself, and the context passes run in.

A pass says what it needs and where it may stand; the runner (squeeze/run/pipeline.py) reads these
declarations to validate a recipe once, before any work, and to know which outputs are stages to
measure. Nothing in the driver names a pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.targets.base import Target


@dataclass(frozen=True)
class Requires:
    """What a pass needs from the run (checked before any work)."""

    data: bool = False  # a dataset (--data or the teacher's recorded one)
    labels: bool = False  # labelled data (passes that can go label-free leave this False)
    logits: bool = False  # the model outputs (N, classes) class logits (other outputs: maps, regression values)
    student: bool = False  # its input is a student (from search or --student), not the teacher itself
    teacher: bool = False  # ctx.teacher (always set by compress; a one-step recipe sets it too)


@dataclass(frozen=True)
class Placement:
    """Where a pass may stand in a recipe."""

    first: bool = False  # must be the first pass
    before: tuple[str, ...] = ()  # must come before these passes when both are in the recipe
    why: str = ""  # said when a rule is broken


@dataclass
class Context:
    """Everything a pass may use besides its input artifact and config."""

    run_dir: Path
    target: Target
    data: DataBundle | None = None
    teacher: ModelArtifact | None = None
    device: str | None = None  # the run's device; None: each pass's config says (default cpu)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("squeeze"))
    progress: Callable[[str], None] = lambda message: None  # status line for humans
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-pass figures for the manifest
    artifacts: dict[str, Any] = field(default_factory=dict)  # each pass's output (verified when it came from the cache)


@runtime_checkable
class Pass(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type]  # a frozen dataclass: the single source of the pass's options (recipe keys, CLI flags, defaults, help)
    input_kind: ClassVar[type]  # the artifact type run() accepts: checked before any pass runs
    output_kind: ClassVar[type]
    requires: ClassVar[Requires]
    placement: ClassVar[Placement]
    produces_stage: ClassVar[bool]  # its output is a new model: measured as a stage of the manifest
    chooses_student: ClassVar[bool]  # its output is the student later passes train (search)
    lowers_precision: ClassVar[bool]  # its output is its input at lower precision (quantize): ships only if measured faster

    def run(self, ctx: Context, inp: Any, cfg: Any) -> Any: ...

    def check(self, cfg: Any, ctx: Context) -> None: ...  # more up-front validation with the loaded teacher and data

    def check_input(self, cfg: Any, art: Any) -> None: ...  # validation of the model it will receive, where that is known up front

    def aim(self, cfg: Any, latency_ms: float, later: tuple[str, ...]) -> Any: ...  # the config aimed at the run's latency budget

    def planned_work(self, cfg: Any, ctx: Context) -> tuple[int, int]: ...  # (training images at most, the n of its k/n messages)


class PassBase:
    """Defaults for the declarations and hooks a pass need not spell out."""

    requires: ClassVar[Requires] = Requires()
    placement: ClassVar[Placement] = Placement()
    produces_stage: ClassVar[bool] = False
    chooses_student: ClassVar[bool] = False
    lowers_precision: ClassVar[bool] = False

    def check(self, cfg: Any, ctx: Context) -> None:
        return None

    def check_input(self, cfg: Any, art: Any) -> None:
        """The artifact this pass will receive, when it is known before any work (the first pass's: the loaded model)."""
        return None

    def aim(self, cfg: Any, latency_ms: float, later: tuple[str, ...] = ()) -> Any:
        """Passes with a `latency_budget_ms` field take the run's budget unless the recipe set one.
        `later`: the passes after this one in the recipe (a pass may aim differently when others follow)."""
        if any(f.name == "latency_budget_ms" for f in dataclasses.fields(cfg)) and getattr(cfg, "latency_budget_ms") is None \
                and getattr(cfg, "latency_budget_ratio", None) is None:
            return dataclasses.replace(cfg, latency_budget_ms=round(latency_ms, 6))
        return cfg

    def aims_at_latency(self, cfg: Any) -> bool:
        return any(f.name == "latency_budget_ms" for f in dataclasses.fields(cfg))

    def planned_work(self, cfg: Any, ctx: Context) -> tuple[int, int]:
        """(training images this pass pushes through at most, the n its 'k/n' training messages count), for the
        run's ETA; (0, 0): it trains nothing."""
        return 0, 0


REQUIRED = ("name", "Config", "input_kind", "output_kind", "run")


def check_pass_class(cls: type, name: str) -> None:
    """A registered class must be a pass: the declarations the runner reads, a dataclass config, run()."""
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if missing:
        raise UserInputError(f"pass {name!r} ({cls.__module__}.{cls.__qualname__}) lacks {', '.join(missing)}")
    if cls.name != name:
        raise UserInputError(f"pass registered as {name!r} calls itself {cls.name!r}")
    if not dataclasses.is_dataclass(cls.Config):
        raise UserInputError(f"pass {name!r}: Config must be a dataclass (the single source of its options)")
    for attr, default in (("requires", Requires()), ("placement", Placement()), ("produces_stage", False), ("chooses_student", False),
                          ("lowers_precision", False)):
        if not hasattr(cls, attr):
            setattr(cls, attr, default)
    for hook in ("check", "check_input", "aim", "aims_at_latency", "planned_work"):
        if not hasattr(cls, hook):
            setattr(cls, hook, getattr(PassBase, hook))
