"""Pass protocol and the context passes run in (ARCHITECTURE.md, "Pass protocol")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.targets.base import Target


@dataclass
class Context:
    """Everything a pass may use besides its input artifact and config."""

    run_dir: Path
    target: Target
    data: DataBundle | None = None
    teacher: ModelArtifact | None = None
    device: str = "cpu"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("squeeze"))
    progress: Callable[[str], None] = lambda message: None  # status line for humans
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-pass figures for the manifest
    artifacts: dict[str, Any] = field(default_factory=dict)  # each pass's output (verified when it came from the cache)


@runtime_checkable
class Pass(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type]
    input_kind: ClassVar[type]  # the artifact type run() accepts: checked before any pass runs
    output_kind: ClassVar[type]

    def run(self, ctx: Context, inp: Any, cfg: Any) -> Any: ...
