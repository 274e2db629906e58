"""Targets: where a model is built and measured. `get_target("cpu")`, `get_target("jetson-orin-nano", device="user@host")`,
`target_names()`; the registry (targets/registry.py) also finds third-party targets by entry point."""

from __future__ import annotations

from squeeze.targets.base import Availability, EngineArtifact, LatencyStats, ProfileSpec, QuantRules, Target, TargetBase, TargetOptions
from squeeze.targets.registry import get_target, target_names

__all__ = ["Availability", "EngineArtifact", "LatencyStats", "ProfileSpec", "QuantRules", "Target", "TargetBase", "TargetOptions",
           "get_target", "target_names"]
