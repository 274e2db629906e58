"""Target registry: `get_target("cpu")`, `target_names()`."""

from __future__ import annotations

from collections.abc import Callable

from squeeze.errors import UserInputError
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules, Target

_FACTORIES: dict[str, Callable[[], Target]] = {}


def register(name: str, factory: Callable[[], Target]) -> None:
    _FACTORIES[name] = factory


def target_names() -> list[str]:
    return list(_FACTORIES)


def get_target(name: str) -> Target:
    if name not in _FACTORIES:
        raise UserInputError(f"unknown target {name!r}; known targets: {', '.join(_FACTORIES)}")
    return _FACTORIES[name]()


def _register_builtins() -> None:
    from squeeze.targets.cpu import CpuTarget
    from squeeze.targets.cuda import CudaTarget
    from squeeze.targets.jetson import JETSON_PROFILES, JetsonTarget
    from squeeze.targets.tensorrt import TensorRTTarget

    register("cpu", CpuTarget)
    register("cuda", CudaTarget)
    register("tensorrt", TensorRTTarget)
    for jetson in JETSON_PROFILES:
        register(jetson, lambda jetson=jetson: JetsonTarget(jetson))


_register_builtins()

__all__ = ["Availability", "LatencyStats", "ProfileSpec", "QuantRules", "Target", "get_target", "register", "target_names"]
