"""Profile pass: measure the exported model's latency on the target's own runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from squeeze.io.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.passes.base import Context
from squeeze.targets.base import ProfileSpec, can_predict


@dataclass(frozen=True)
class ProfileConfig:
    spec: ProfileSpec = ProfileSpec()


class ProfilePass:
    name: ClassVar[str] = "profile"
    Config: ClassVar[type] = ProfileConfig
    input_kind: ClassVar[type] = OnnxArtifact
    output_kind: ClassVar[type] = OnnxArtifact

    def run(self, ctx: Context, inp: OnnxArtifact, cfg: ProfileConfig) -> OnnxArtifact:
        availability = ctx.target.available()
        if not availability.available:
            if not can_predict(ctx.target):
                raise TargetUnavailableError(f"target {ctx.target.name} is unavailable here: {availability.reason}")
            # a target that cannot measure here (a Jetson without --device) predicts, and says so in every figure
            ctx.progress(f"PREDICTING latency on {ctx.target.name} (cannot measure here: {availability.reason})")
            stats = ctx.target.predict(inp, cfg.spec).to_dict()
            ctx.results[self.name] = {**stats, "measured": False, "label": "predicted", "why_predicted": availability.reason}
            return inp
        ctx.progress(f"profiling on {ctx.target.name} ({cfg.spec.iterations} runs)")
        stats = ctx.target.profile(inp, cfg.spec)
        ctx.results[self.name] = stats.to_dict()
        return inp
