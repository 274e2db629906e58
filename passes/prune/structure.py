"""What pruning edits: layers, blocks and widths; width cuts through Torch-Pruning's dependency graph,
block removal, BatchNorm re-estimation, and the checks that a model can be pruned at all."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.measure.analysis import count_macs, count_params, evaluating
from squeeze.train import losses

CALIBRATION_BATCH = 256  # samples for block importance, damage (KL) and Taylor gradients


QUANTIZER_MODULE_PREFIXES = ("torch.ao.nn.qat", "torch.ao.nn.quantized", "torch.ao.nn.intrinsic.qat", "torch.nn.qat",
                             "torch.nn.quantized", "nncf.", "modelopt.torch.quantization")


def find_quantizer(module: nn.Module) -> str | None:
    """The first fake-quant / observer / quantized layer, as 'name (Type)', or None for a float model."""
    from torch.ao.quantization import FakeQuantizeBase, ObserverBase

    for name, m in module.named_modules():
        cls = type(m)
        if isinstance(m, (FakeQuantizeBase, ObserverBase)) or cls.__module__.startswith(QUANTIZER_MODULE_PREFIXES):
            return f"{name or '(root)'} ({cls.__name__})"
    return None


def check_float_model(art: ModelArtifact) -> None:
    if art.format in ("pt2", "torchscript") or isinstance(art.module, (torch.fx.GraphModule, torch.jit.ScriptModule)):
        raise UserInputError(f"{art.source} is a {art.format} graph; pruning edits layers, so it needs the model as an nn.Module: "
                             "a squeeze checkpoint, or a state_dict with --arch")
    found = find_quantizer(art.module)
    if found:
        raise UserInputError(f"{art.source} is quantized (it has {found}); prune the float model first, then quantize "
                             "(pass order: prune -> quantize): fake-quant observers are not pruned with their layers (Torch-Pruning #291)")
    if any(p.dtype != torch.float32 for p in art.module.parameters()):
        raise UserInputError(f"{art.source} has non-float32 parameters; prune the float32 model")


def locate_forward_failure(module: nn.Module, x: torch.Tensor, grad: bool = False) -> tuple[str, str] | None:
    """Run `module(x)`; on failure (where, first line of the error) for the innermost layer whose forward raised."""
    stack: list[str] = []
    hooks = []
    for name, m in module.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name) and None))
        hooks.append(m.register_forward_hook(lambda _m, _i, _o: (stack.pop() if stack else None) and None))  # None: keep the output
    try:
        with torch.set_grad_enabled(grad), evaluating(module):
            module(x)
    except Exception as exc:
        name = stack[-1] if stack else ""
        layer = module.get_submodule(name) if name else module
        kind = type(layer).__name__
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        where = f"layer {name!r} ({kind})" if name else f"the forward of {kind} itself"
        return where + _source_line(exc, layer), first[:200]
    finally:
        for h in hooks:
            h.remove()
    return None


def _source_line(exc: BaseException, layer: nn.Module) -> str:
    """' at file.py:LINE (`code`)': the statement of `layer`'s own forward that raised (a model's forward
    is often long: name the op), or '' where that forward is torch's own or not in the traceback."""
    import linecache
    import os

    code = getattr(type(layer).forward, "__code__", None)
    if code is None or code.co_filename.startswith(os.path.dirname(torch.__file__)):
        return ""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code is code:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return ""
    text = linecache.getline(code.co_filename, line).strip()
    return f" at {os.path.basename(code.co_filename)}:{line} (`{text if len(text) <= 100 else text[:99] + '…'}`)"


def output_layer(module: nn.Module, example: torch.Tensor) -> str:
    """The last Conv/Linear to run: the classifier, whose outputs (the classes) are never pruned."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
             for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad(), evaluating(module):
            module(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise UserInputError(f"{type(module).__name__} has no Conv or Linear layer to prune")
    return order[-1]


def layer_widths(module: nn.Module) -> dict[str, int]:
    """Output channels of every Conv/Linear, by name."""
    return {name: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for name, m in module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def planned_width(original: int, ratio: float, multiple: int, groups: int = 1) -> int:
    """Channels kept of `original` at cumulative `ratio`: rounded to the nearest multiple (never below one
    multiple, never above the original); layers already no wider than one multiple are left alone."""
    unit = math.lcm(max(1, multiple), max(1, groups))
    if original <= unit:
        return original
    kept = math.floor(original * (1.0 - ratio) / unit + 0.5) * unit  # half rounds up, unlike round()
    return int(min(original, max(unit, kept)))


def block_names(module: nn.Module) -> list[str]:
    """Blocks: composite layers that are items of an nn.Sequential (ResNet basic blocks, inverted residuals)."""
    names = []
    for parent_name, parent in module.named_modules():
        if isinstance(parent, nn.Sequential):
            for child_name, child in parent.named_children():
                if not isinstance(child, (nn.Sequential, nn.Identity)) and any(True for _ in child.children()):
                    names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


@torch.no_grad()
def block_importance(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """BI = 1 - E[cos(input, output)] of every identity-shaped block (input shape == output shape), on `x`.

    A residual block whose output barely turns its input (BI near 0) is the cheapest to remove.
    """
    names = block_names(module)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    modules = dict(module.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, inp, out, n=n: captured.__setitem__(n, (inp[0], out))) for n in names]
    try:
        with evaluating(module):
            module(x)
    finally:
        for h in hooks:
            h.remove()
    scores = {}
    for n in names:
        if n in captured and isinstance(captured[n][1], torch.Tensor) and captured[n][0].shape == captured[n][1].shape:
            a, b = captured[n][0].flatten(1), captured[n][1].flatten(1)
            scores[n] = float(1.0 - F.cosine_similarity(a, b, dim=1).mean())
    return scores


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def prune_width(model: nn.Module, example: torch.Tensor, original: dict[str, int], ratio: float, multiple: int, classifier: str | list[str],
                importance: str, calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
                teacher: nn.Module | None = None, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, int]:
    """Cut every prunable layer of `model` (in place) to planned_width(original width, ratio); returns the new widths.

    Torch-Pruning's DependencyGraph finds the coupled groups; a per-root ratio is set so that each group
    keeps exactly the planned count (its own `round_to` rounds down from the current width and can hit 0).
    `classifier`: the layer(s) whose outputs are the model's outputs (kept whole). The graph is traced
    through every output of a model whose --output picked one (the others share its layers and must stay
    consistent with them); `loss(outputs, labels)` replaces the Taylor importance's CE / logit KD.
    """
    import torch_pruning as tp

    from squeeze.io.outputs import all_outputs

    keep = [classifier] if isinstance(classifier, str) else list(classifier)
    modules = dict(model.named_modules())
    ratios: dict[nn.Module, float] = {}
    for name, current in layer_widths(model).items():
        if name in keep or name not in original:
            continue
        m = modules[name]
        groups = m.groups if isinstance(m, nn.modules.conv._ConvNd) and m.groups not in (1, m.out_channels) else 1
        target = planned_width(original[name], ratio, multiple, groups)
        if target < current:
            ratios[m] = (current - target - 0.5) / current  # int(current * (1 - r)) == target
    if not ratios:
        return layer_widths(model)
    failure = locate_forward_failure(model, example, grad=True)
    if failure:
        raise UserInputError(f"Torch-Pruning cannot trace {type(model).__name__}: {failure[0]} fails: {failure[1]}")
    try:
        pruner = tp.pruner.BasePruner(model, example, importance=_importance(importance), pruning_ratio=0.0, pruning_ratio_dict=ratios,
                                      ignored_layers=[modules[n] for n in keep], round_to=None, forward_fn=all_outputs)
    except Exception as exc:
        raise UserInputError(f"Torch-Pruning cannot trace {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if importance == "taylor":
        if calibration is None:
            raise UserInputError("taylor importance needs calibration data")
        x, y = calibration
        model.zero_grad(set_to_none=True)
        with evaluating(model):
            logits = model(x)
            if loss is not None:
                value = loss(logits, y)
            elif (y >= 0).all():
                value = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    t_logits = (teacher or model)(x)
                value = losses.kd_loss(logits, t_logits, 1.0)
            value.backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    failure = locate_forward_failure(model, example)
    if failure:
        raise UserInputError(f"pruning broke the model at {failure[0]}: {failure[1]}; Torch-Pruning could not follow this layer's "
                             "channel dependency (a buffer, a hard-coded shape or a functional op); rewrite it with standard layers")
    return layer_widths(model)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Re-estimate BatchNorm statistics on calibration data after a structural edit (adaptive BN,
    EagleEye, Li et al. 2020): the old statistics describe inputs the pruned layers no longer produce,
    and with fresh ones the damage measured before recovery ranks candidates far better."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = model.training
    model.train()
    try:
        for chunk in x.split(batch):
            model(chunk)
    finally:
        model.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def remove_block(model: nn.Module, name: str) -> None:
    from squeeze.io.structure import _set_submodule

    _set_submodule(model, name, nn.Identity())


def architecture_key(model: nn.Module) -> str:
    """Same key <=> same layer shapes and removed blocks, hence the same latency (weights do not matter)."""
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    identities = [n for n, m in model.named_modules() if isinstance(m, nn.Identity)]
    return hashlib.sha256(repr((shapes, identities)).encode()).hexdigest()[:16]


_SIZES: dict[str, dict[str, int]] = {}


def size_of(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Params and MACs, cached by architecture (counting MACs runs a dispatcher-level forward)."""
    key = f"{architecture_key(model)}-{tuple(example.shape)}"
    if key not in _SIZES:
        _SIZES[key] = {"params": count_params(model), "macs": count_macs(model, example)}
    return dict(_SIZES[key])
