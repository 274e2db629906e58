"""The pass registry: built-in passes and third-party ones, through the same door.

A third-party package adds a pass with one entry point (no edit of squeeze):

    [project.entry-points."squeeze.passes"]
    sparsify = "mypkg.sparsify:SparsifyPass"

Classes are imported only when a recipe names them, so a heavy pass costs nothing to runs that
do not use it. A class must satisfy `squeeze.passes.base.Pass` (checked on load).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from squeeze.errors import UserInputError

ENTRY_POINT_GROUP = "squeeze.passes"
BUILTIN: dict[str, str] = {
    "search": "squeeze.passes.search:SearchPass",
    "distill": "squeeze.passes.distill.pass_:DistillPass",
    "prune": "squeeze.passes.prune:PrunePass",
    "quantize": "squeeze.passes.quantize.pass_:QuantizePass",
    "export": "squeeze.passes.export:ExportPass",
    "profile": "squeeze.passes.profile:ProfilePass",
}


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            raise UserInputError(f"plugin pass {ep.name!r} ({ep.value}) would shadow squeeze's built-in pass of that name; rename it")
        found[ep.name] = ep.value
    return found


def pass_paths() -> dict[str, str]:
    """name -> 'module:Class' of every known pass, built-ins first."""
    return {**BUILTIN, **_entry_points()}


def pass_names() -> list[str]:
    return list(pass_paths())


def refresh() -> None:
    """Forget the entry points read so far (tests install a plugin mid-session)."""
    _entry_points.cache_clear()
    pass_class.cache_clear()


@lru_cache(maxsize=None)
def pass_class(name: str) -> type:
    from squeeze.passes.base import check_pass_class

    paths = pass_paths()
    if name not in paths:
        raise UserInputError(f"unknown pass {name!r}; known passes: {', '.join(paths)}")
    module_name, _, attr = paths[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserInputError(f"pass {name!r} ({paths[name]}) cannot be loaded: {type(exc).__name__}: {exc}") from None
    check_pass_class(cls, name)
    return cls
