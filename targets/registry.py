"""The target registry: built-in targets and third-party ones, through the same door.

A third-party package adds a target with one entry point (no edit of squeeze):

    [project.entry-points."squeeze.targets"]
    my-npu = "mypkg.npu:NpuTarget"

A target class takes its command-line options in `from_options(name, TargetOptions)` and is
imported only when a run names it. `ssh://user@host` selects the `ssh` target with that address.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from squeeze.errors import UserInputError
from squeeze.targets.base import TargetOptions

ENTRY_POINT_GROUP = "squeeze.targets"
JETSON = "squeeze.targets.jetson:JetsonTarget"
BUILTIN: dict[str, str] = {
    "cpu": "squeeze.targets.cpu:CpuTarget",
    "cuda": "squeeze.targets.cuda:CudaTarget",
    "tensorrt": "squeeze.targets.tensorrt:TensorRTTarget",
    "jetson": JETSON,  # the module is detected on --device
    **{name: JETSON for name in ("jetson-orin-nano", "jetson-orin-nano-4gb", "jetson-orin-nx", "jetson-orin-nx-8gb",
                                 "jetson-agx-orin", "jetson-agx-orin-32gb")},
    "ssh": "squeeze.targets.ssh:SshTarget",  # used as ssh://user@host[:port]
    "openvino": "squeeze.targets.openvino:OpenvinoTarget",  # OpenVINO CPU plugin, IR artifact (squeeze[openvino])
}


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            raise UserInputError(f"plugin target {ep.name!r} ({ep.value}) would shadow squeeze's built-in target of that name; rename it")
        found[ep.name] = ep.value
    return found


def target_paths() -> dict[str, str]:
    return {**BUILTIN, **_entry_points()}


def target_names() -> list[str]:
    return list(target_paths())


def refresh() -> None:
    """Forget the entry points read so far (tests install a plugin mid-session)."""
    _entry_points.cache_clear()
    target_class.cache_clear()


@lru_cache(maxsize=None)
def target_class(name: str) -> type:
    paths = target_paths()
    module_name, _, attr = paths[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserInputError(f"target {name!r} ({paths[name]}) cannot be loaded: {type(exc).__name__}: {exc}") from None
    missing = [a for a in ("name", "available", "profile", "from_options", "latency", "build") if not hasattr(cls, a)]
    if missing:
        raise UserInputError(f"target {name!r} ({paths[name]}) lacks {', '.join(missing)}; subclass squeeze.targets.base.TargetBase")
    from squeeze.targets.base import TargetBase

    for attr in ("settings_candidates", "deploy_settings", "infer", "layer_profile", "preflight", "can_predict"):
        if not hasattr(cls, attr) and hasattr(TargetBase, attr):  # optional members: the protocol's defaults
            setattr(cls, attr, getattr(TargetBase, attr))
    return cls


def get_target(name: str, options: TargetOptions | None = None, **option_values: Any) -> Any:
    """A target by name, configured from its options (TargetOptions, or its fields as keywords)."""
    if options is None:
        try:
            options = TargetOptions(**option_values)
        except TypeError as exc:
            raise UserInputError(f"unknown target option: {exc}") from None
    lookup = "ssh" if name.startswith("ssh://") else name
    if lookup not in target_paths():
        raise UserInputError(f"unknown target {name!r}; known targets: {', '.join(target_names())} (and ssh://user@host[:port])")
    return target_class(lookup).from_options(name, options)


def target_from_options(name: str, **options: Any) -> Any:
    """The target configured from command-line option values (None = not given)."""
    return get_target(name, TargetOptions(**{k: v for k, v in options.items() if v is not None}))
