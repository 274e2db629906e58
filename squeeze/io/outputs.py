"""Models with several outputs (a tuple or a dict): `--output NAME` picks the one squeeze compresses
(a tuple's index, a dict's key); the others are not part of the compressed model. The choice is
recorded in the model's metadata, so a checkpoint a pass writes keeps it when it is loaded again."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeeze.errors import UserInputError

OUTPUT_KEY = "output"  # the metadata key that records the selected output


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "N x " + ("x".join(map(str, value.shape[1:])) or "1")
    return type(value).__name__


def listing(out: Any) -> list[tuple[str, str]]:
    """(name, per-sample shape) of each output of a tuple/list/dict model output."""
    items = out.items() if isinstance(out, dict) else enumerate(out)
    return [(str(k), _shape(v)) for k, v in items]


def describe(out: Any) -> str:
    kind = "a dict" if isinstance(out, dict) else f"a {type(out).__name__}"
    return f"{kind} of {len(out)} outputs: " + ", ".join(f"{name} ({shape})" for name, shape in listing(out))


def is_multi(out: Any) -> bool:
    return isinstance(out, (tuple, list, dict))


def resolve(out: Any, name: str | int, source: str) -> str | int:
    """The key `name` stands for in this model's output: a dict key, or a tuple index written as a number."""
    if isinstance(out, dict):
        key = next((k for k in out if str(k) == str(name)), None)
        if key is None:
            raise UserInputError(f"--output {name}: {source} has no output named {str(name)!r}; it returns {describe(out)}")
    else:
        try:
            key = int(name)
        except (TypeError, ValueError):
            raise UserInputError(f"--output {name}: {source} returns {describe(out)}; name one by its index (0..{len(out) - 1})") from None
        if not 0 <= key < len(out):
            raise UserInputError(f"--output {name}: {source} returns {describe(out)}; the index must be in 0..{len(out) - 1}")
    if not isinstance(out[key], torch.Tensor):
        raise UserInputError(f"--output {name}: that output of {source} is a {type(out[key]).__name__}, not a tensor")
    return key


_CLASSES: dict[tuple[type, Any], type] = {}


def _selecting_class(base: type, key: str | int) -> type:
    """A subclass of the model's own class whose forward returns one output. Layer names, the state_dict and
    deepcopy are the model's own (checkpoints, pruning and layer taps see the same model); FX and the
    exporters trace the class's forward, so they see one output too."""
    cls = _CLASSES.get((base, key))
    if cls is None:
        def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return base.forward(self, x)[key]

        cls = type(base.__name__, (base,), {"forward": forward, "__module__": base.__module__, "squeeze_base": base})
        _CLASSES[(base, key)] = cls
    return cls


class SelectOutput(nn.Module):
    """One output of a graph whose class cannot be extended (TorchScript, a .pt2 program's module)."""

    def __init__(self, inner: nn.Module, key: str | int):
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[self.key]


def select(module: nn.Module, key: str | int) -> nn.Module:
    """`module`, answering only with output `key`."""
    if isinstance(module, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return SelectOutput(module, key)
    module.__class__ = _selecting_class(type(module), key)
    return module


def apply(art: Any, out: Any, output: str | int | None) -> torch.Tensor:
    """The load-time forward's output, once the model answers with one tensor: a multi-output model needs
    --output (or a selection its checkpoint recorded); a single-output model takes none."""
    recorded = art.metadata.get(OUTPUT_KEY)
    if not is_multi(out):
        if output is not None:
            raise UserInputError(f"--output {output}: {art.source} has one output ({_shape(out)}); drop --output")
        return out
    if output is None and recorded is None:
        raise UserInputError(f"{art.source} returns {describe(out)}; pick the one to compress with --output NAME")
    if output is not None and recorded is not None and str(output) != str(recorded):
        raise UserInputError(f"--output {output}: {art.source} was compressed for its output {recorded!r}; it has no other")
    key = resolve(out, recorded if output is None else output, art.source)
    art.outputs = listing(out)
    art.module = select(art.module, key)
    art.metadata = {**art.metadata, OUTPUT_KEY: key}
    art.exported_program = None  # a .pt2 program returns every output: the exporter traces the selecting module instead
    return out[key]


def all_outputs(module: nn.Module, x: torch.Tensor) -> Any:
    """Every output of a selected model (its own class's forward), for tracing what the other outputs share
    with the selected one; a model without a selection answers as it is."""
    base = getattr(type(module), "squeeze_base", None)
    return base.forward(module, x) if base is not None else module(x)


def final_layers(module: nn.Module, x: torch.Tensor) -> list[str]:
    """The Conv/Linear nearest to each output (walking back from the output through autograd): the layers
    whose output channels are the model's outputs, never pruned. Empty where no output comes from one."""
    made: dict[Any, str] = {}
    x = x.detach().clone().requires_grad_(True)  # every op then has a grad_fn, frozen weights or not
    layers = (nn.Linear, nn.modules.conv._ConvNd)
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: made.__setitem__(out.grad_fn, name) if torch.is_tensor(out) else None)
             for name, m in module.named_modules() if isinstance(m, layers)]
    was_training = module.training
    try:
        module.eval()
        with torch.enable_grad():
            out = all_outputs(module, x)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    found: list[str] = []
    for tensor in (out.values() if isinstance(out, dict) else out if is_multi(out) else [out]):
        name = _nearest(tensor.grad_fn if torch.is_tensor(tensor) else None, made)
        if name is not None and name not in found:
            found.append(name)
    return found


def _nearest(fn: Any, made: dict[Any, str]) -> str | None:
    """Breadth-first from an output's grad_fn to the first node a Conv/Linear produced."""
    queue, seen = [fn], set()
    while queue:
        node = queue.pop(0)
        if node is None or node in seen:
            continue
        if node in made:
            return made[node]
        seen.add(node)
        queue.extend(n for n, _ in getattr(node, "next_functions", ()))
    return None


def check_targets_fit(bundle: Any, model: Any) -> None:
    """Per-pixel labels need a (C, H, W) output of their H x W with C above every label; regression targets
    an output of their length."""
    shape, target = tuple(model.probe_output_shape()), tuple(bundle.full[0][1].shape)
    text = "x".join(map(str, shape))
    if bundle.targets == "pixel" and (len(shape) != 3 or shape[1:] != target or shape[0] < 2):
        raise UserInputError(f"data {bundle.source} has per-pixel labels of {'x'.join(map(str, target))}, but the model outputs N x {text} "
                             f"(per-pixel labels need a C x {'x'.join(map(str, target))} class map, C >= 2)")
    if bundle.targets == "pixel" and bundle.num_classes is not None and bundle.num_classes > shape[0]:
        raise UserInputError(f"data {bundle.source}: per-pixel labels go up to {bundle.num_classes - 1}, but the model outputs {shape[0]} "
                             "channels (one per class)")
    if bundle.targets == "regression" and shape != target:
        raise UserInputError(f"data {bundle.source} has regression targets of {'x'.join(map(str, target))} values, but the model "
                             f"outputs N x {text}")
