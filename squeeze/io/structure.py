"""A pruned architecture as plain data, so a pruned model reloads without unpickling code.

A structurally pruned model no longer matches the shapes its factory builds. Instead of pickling
the module (unsafe to load) or Torch-Pruning's `tp.state_dict` (it stores each module's __dict__,
which needs full unpickling), a squeeze checkpoint records the edits as JSON-able data:

- `removed`: names of blocks replaced by nn.Identity (depth pruning);
- `layers`: for each resized layer, its new channel counts (and conv groups).

`apply_structure` repeats the edits on a freshly built factory model; the checkpoint's weights
then load with `strict=True`, which proves every shape was rebuilt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeeze.errors import UserInputError

STRUCTURE_VERSION = 1
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _layer_record(module: nn.Module) -> dict[str, Any] | None:
    if isinstance(module, _CONV):
        return {"type": type(module).__name__, "in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, _NORM):
        return {"type": type(module).__name__, "num_features": module.num_features}
    if isinstance(module, nn.GroupNorm):
        return {"type": "GroupNorm", "num_channels": module.num_channels, "num_groups": module.num_groups}
    if isinstance(module, nn.LayerNorm):
        return {"type": "LayerNorm", "normalized_shape": list(module.normalized_shape)}
    if isinstance(module, nn.PReLU):
        return {"type": "PReLU", "num_parameters": module.num_parameters}
    return None


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def record_structure(pruned: nn.Module, original: nn.Module) -> dict[str, Any]:
    """What differs between `pruned` and the unpruned `original` (same factory, same module names)."""
    orig_modules = dict(original.named_modules())
    pruned_modules = dict(pruned.named_modules())
    removed = sorted(name for name, m in pruned_modules.items()
                     if name and isinstance(m, nn.Identity) and name in orig_modules and not isinstance(orig_modules[name], nn.Identity))
    layers: dict[str, dict[str, Any]] = {}
    for name, m in pruned_modules.items():
        if any(name == r or name.startswith(r + ".") for r in removed) or name not in orig_modules:
            continue
        now, before = _layer_record(m), _layer_record(orig_modules[name])
        if now != before:
            if now is None:
                raise UserInputError(f"cannot record the pruned shape of layer {name!r} ({type(m).__name__}); "
                                     "squeeze records Conv, Linear, BatchNorm, GroupNorm, LayerNorm and PReLU layers")
            layers[name] = now
    # Anything else whose tensors changed shape (a custom layer Torch-Pruning resized) cannot be rebuilt.
    orig_shapes, new_shapes = _shapes(original), _shapes(pruned)
    for key, shape in new_shapes.items():
        owner = key.rsplit(".", 1)[0] if "." in key else ""
        if orig_shapes.get(key, shape) != shape and owner not in layers:
            raise UserInputError(f"cannot record the pruned shape of {key!r} ({type(pruned_modules.get(owner, pruned)).__name__}); "
                                 "squeeze records Conv, Linear, BatchNorm, GroupNorm, LayerNorm and PReLU layers")
    return {"version": STRUCTURE_VERSION, "removed": removed, "layers": layers}


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _resize(module: nn.Module, spec: dict[str, Any], name: str) -> None:
    kind = spec.get("type")
    if kind != type(module).__name__:
        raise UserInputError(f"pruned structure names a {kind} at {name!r}, the architecture has a {type(module).__name__}")

    def fresh(shape: tuple[int, ...]) -> nn.Parameter:
        return nn.Parameter(torch.empty(shape))  # values come from the checkpoint's state_dict

    if isinstance(module, _CONV):
        cin, cout, groups = int(spec["in_channels"]), int(spec["out_channels"]), int(spec["groups"])
        if cin % groups or cout % groups:
            raise UserInputError(f"pruned structure for {name!r}: channels {cin}->{cout} do not divide into {groups} groups")
        module.in_channels, module.out_channels, module.groups = cin, cout, groups
        module.weight = fresh((cout, cin // groups, *module.kernel_size))
        if module.bias is not None:
            module.bias = fresh((cout,))
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = int(spec["in_features"]), int(spec["out_features"])
        module.weight = fresh((module.out_features, module.in_features))
        if module.bias is not None:
            module.bias = fresh((module.out_features,))
    elif isinstance(module, _NORM):
        n = int(spec["num_features"])
        module.num_features = n
        if module.affine:
            module.weight, module.bias = fresh((n,)), fresh((n,))
        if module.track_running_stats:
            module.running_mean, module.running_var = torch.zeros(n), torch.ones(n)
    elif isinstance(module, nn.GroupNorm):
        module.num_channels, module.num_groups = int(spec["num_channels"]), int(spec["num_groups"])
        if module.affine:
            module.weight, module.bias = fresh((module.num_channels,)), fresh((module.num_channels,))
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(int(s) for s in spec["normalized_shape"])
        if module.elementwise_affine:
            module.weight = fresh(module.normalized_shape)
            if module.bias is not None:
                module.bias = fresh(module.normalized_shape)
    elif isinstance(module, nn.PReLU):
        module.num_parameters = int(spec["num_parameters"])
        module.weight = fresh((module.num_parameters,))


def apply_structure(module: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Repeat recorded pruning edits on a freshly built (unpruned) model, in place."""
    if not isinstance(structure, dict) or structure.get("version") != STRUCTURE_VERSION:
        raise UserInputError(f"unsupported pruned-structure record (version {structure.get('version') if isinstance(structure, dict) else '?'})")
    modules = dict(module.named_modules())
    for name in structure.get("removed", []):
        if name not in modules or not name:
            raise UserInputError(f"pruned structure removes block {name!r}, which the architecture does not have")
        _set_submodule(module, name, nn.Identity())
    modules = dict(module.named_modules())
    for name, spec in structure.get("layers", {}).items():
        if name not in modules:
            raise UserInputError(f"pruned structure resizes layer {name!r}, which the architecture does not have")
        _resize(modules[name], spec, name)
    return module
