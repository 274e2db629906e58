"""Target registry: `get_target("cpu")`, `get_target("jetson-orin-nano", device="user@host")`, `target_names()`.

Names: cpu, cuda, tensorrt, jetson (module detected on --device), jetson-orin-nano[-4gb],
jetson-orin-nx[-8gb], jetson-agx-orin[-32gb], ssh (listed; used as ssh://user@host[:port]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from squeeze.errors import UserInputError
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules, Target

_FACTORIES: dict[str, Callable[..., Target]] = {}


def register(name: str, factory: Callable[..., Target]) -> None:
    _FACTORIES[name] = factory


def target_names() -> list[str]:
    return list(_FACTORIES)


def get_target(name: str, **options: Any) -> Target:
    """A target by name. Remote targets take `device`, `ssh` (SshOptions) and their own options; others take none."""
    if name.startswith("ssh://"):
        return _FACTORIES["ssh"](address=name, **options)
    if name not in _FACTORIES:
        raise UserInputError(f"unknown target {name!r}; known targets: {', '.join(_FACTORIES)} (and ssh://user@host[:port])")
    return _FACTORIES[name](**options)


def _local(cls: type) -> Callable[..., Target]:
    def factory(**options: Any) -> Target:
        given = {k for k, v in options.items() if v not in (None, False)}
        if given:
            raise UserInputError(f"target {cls.name} runs on this machine; {', '.join(sorted('--' + k.replace('_', '-') for k in given))} "
                                 "only apply to remote targets (jetson-*, ssh://)")
        return cls()

    return factory


def _tensorrt(**options: Any) -> Target:
    from squeeze.targets.tensorrt import TensorRTConfig, TensorRTTarget

    remote_only = {k for k in ("device", "ssh", "power_mode", "remote_python") if options.get(k) is not None}
    if remote_only:
        raise UserInputError(f"target tensorrt is this machine's GPU; for a device use --target jetson-... with --device "
                             f"({', '.join(sorted(remote_only))} given)")
    config = options.get("tensorrt_config") or TensorRTConfig()
    return TensorRTTarget(config)


def _jetson(name: str) -> Callable[..., Target]:
    def factory(device: str | None = None, jetson_config: Any = None, **options: Any) -> Target:
        from squeeze.targets.jetson import JetsonConfig, JetsonTarget

        if options.get("remote_python") is not None:
            raise UserInputError("--remote-python is for ssh:// targets; Jetson targets run trtexec")
        config = jetson_config or JetsonConfig(**{k: v for k, v in options.items() if k in ("ssh", "power_mode") and v is not None})
        return JetsonTarget(name, device, config)

    return factory


def _ssh(address: str | None = None, device: str | None = None, ssh: Any = None, remote_python: str | None = None,
         power_mode: str | None = None, **_: Any) -> Target:
    from squeeze.targets.ssh import SshTarget, SshTargetConfig

    if device is not None:
        raise UserInputError("an ssh target takes its address in the name: --target ssh://user@host[:port] (no --device)")
    if power_mode is not None:
        raise UserInputError("--power-mode applies to Jetson targets only")
    kwargs = {k: v for k, v in {"ssh": ssh, "remote_python": remote_python}.items() if v is not None}
    return SshTarget(address, SshTargetConfig(**kwargs))


def _register_builtins() -> None:
    from squeeze.targets.cpu import CpuTarget
    from squeeze.targets.cuda import CudaTarget
    from squeeze.targets.jetson import ALIAS, JETSON_PROFILES

    register("cpu", _local(CpuTarget))
    register("cuda", _local(CudaTarget))
    register("tensorrt", _tensorrt)
    register(ALIAS, _jetson(ALIAS))
    for jetson in JETSON_PROFILES:
        register(jetson, _jetson(jetson))
    register("ssh", _ssh)


_register_builtins()

__all__ = ["Availability", "LatencyStats", "ProfileSpec", "QuantRules", "Target", "get_target", "register", "target_names"]
