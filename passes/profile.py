"""Profile pass: measure the exported model's latency on the target's own runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from squeeze.io.artifacts import OnnxArtifact
from squeeze.passes.base import Context, PassBase
from squeeze.targets.base import ProfileSpec


@dataclass(frozen=True)
class ProfileConfig:
    spec: ProfileSpec = ProfileSpec()


class ProfilePass(PassBase):
    name: ClassVar[str] = "profile"
    Config: ClassVar[type] = ProfileConfig
    input_kind: ClassVar[type] = OnnxArtifact
    output_kind: ClassVar[type] = OnnxArtifact

    def run(self, ctx: Context, inp: OnnxArtifact, cfg: ProfileConfig) -> OnnxArtifact:
        availability = ctx.target.available()
        if availability.available:
            ctx.progress(f"profiling on {ctx.target.name} ({cfg.spec.iterations} runs)")
        else:  # a target that cannot measure here (a Jetson without --device) predicts, and says so in every figure
            ctx.progress(f"PREDICTING latency on {ctx.target.name} (cannot measure here: {availability.reason})")
        stats = ctx.target.latency(inp, cfg.spec).to_dict()
        if not stats["measured"]:
            stats.update(label="predicted", why_predicted=availability.reason)
        ctx.results[self.name] = stats
        return inp
