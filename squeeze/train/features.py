"""Intermediate features for distillation: stage outputs picked automatically, and embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeeze.measure.analysis import evaluating
from squeeze.errors import UserInputError


@torch.no_grad()
def stage_names(module: nn.Module, example: torch.Tensor) -> list[str]:
    """The module that finishes last at each spatial resolution (its stage output), in forward order.

    Hooks fire when a module finishes, so inner modules report before the block that holds them:
    the last report before the resolution changes is the outermost module of that stage.
    """
    order: list[tuple[str, tuple[int, int]]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: order.append((name, tuple(out.shape[-2:])))
                                     if isinstance(out, torch.Tensor) and out.ndim == 4 else None)
             for name, m in module.named_modules() if name]
    try:
        with evaluating(module):
            module(example)
    finally:
        for h in hooks:
            h.remove()
    stages: list[str] = []
    for i, (name, size) in enumerate(order):
        last_of_run = i + 1 == len(order) or order[i + 1][1] != size
        if last_of_run and size != (1, 1):
            stages.append(name)
    return stages


def classifier_name(module: nn.Module) -> str | None:
    """The last nn.Linear (or, in an unflattened .pt2, the last leaf layer holding a 2-D weight): its input is the
    penultimate embedding."""
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        linears = [name for name, m in module.named_modules()
                   if name and not list(m.children()) and getattr(m, "weight", None) is not None and m.weight.ndim == 2]
    return linears[-1] if linears else None


def layered_teacher(art: Any) -> nn.Module:
    """The teacher with its layers reachable by name and forward hooks (feature hints, relation losses): a .pt2's
    program unflattened back to the module hierarchy it was exported from (torch.export.unflatten), else the module
    as loaded. A TorchScript module stays as it is: hooks on its submodules never fire, so callers refuse it."""
    program = getattr(art, "exported_program", None)
    if program is not None and isinstance(art.module, torch.fx.GraphModule):
        return torch.export.unflatten(program)
    return art.module


def has_layers(module: nn.Module) -> bool:
    """Whether forward hooks on named submodules see this module's intermediate values."""
    return bool(list(module.named_modules())[1:]) and not isinstance(module, (torch.fx.GraphModule, torch.jit.ScriptModule))


class FeatureTap:
    """Captures the outputs of named modules (and the input of an embedding module) on each forward."""

    def __init__(self, module: nn.Module, outputs: list[str], embedding_of: str | None = None):
        modules = dict(module.named_modules())
        missing = [n for n in [*outputs, *([embedding_of] if embedding_of else [])] if n not in modules]
        if missing:
            raise UserInputError(f"no layer named {missing[0]!r} in {type(module).__name__}; layers: {', '.join(list(modules)[1:12])}, ...")
        self.outputs: dict[str, torch.Tensor] = {}
        self.embedding: torch.Tensor | None = None
        self.names = outputs
        self._hooks = [modules[n].register_forward_hook(self._store(n)) for n in outputs]
        if embedding_of:
            self._hooks.append(modules[embedding_of].register_forward_pre_hook(self._store_embedding))

    def _store(self, name: str):
        def hook(_m: Any, _inp: Any, out: torch.Tensor) -> None:
            self.outputs[name] = out
        return hook

    def _store_embedding(self, _m: Any, inp: tuple[torch.Tensor, ...]) -> None:
        self.embedding = inp[0]

    def features(self) -> list[torch.Tensor]:
        return [self.outputs[n] for n in self.names]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
