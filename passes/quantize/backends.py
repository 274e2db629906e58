"""Quantization backends: the protocol the quantize pass uses, a registry, and what the backends share.
One backend per file (torch_fx.py, modelopt.py); a third-party one adds an entry point in the group
`squeeze.quant_backends`.

- `modelopt` (NVIDIA ModelOpt, `mtq.INT8_DEFAULT_CFG`): quantizers on the inputs and weights of
  Conv/Linear (TensorRT's placement), signed symmetric int8, zero point 0, per-channel weights
  on axis 0, max calibration. Serves tensorrt / jetson-* / cuda.
- `torch-fx` (PyTorch's FX graph-mode QAT, `prepare_qat_fx` with the native backend's patterns):
  quantizers on the outputs of Conv(+ReLU), Add(+ReLU), pooling: the pattern ONNX Runtime's CPU EP
  fuses into QLinearConv/QLinearAdd, with uint8 affine activations. Serves cpu.

Both give a torch model of fake-quant modules that trains (QAT) and exports through the legacy
TorchScript ONNX exporter as QuantizeLinear/DequantizeLinear pairs (deploy.md §4).
BatchNorm is folded into the convolutions first, so the weights that get quantized and trained are
the ones the runtime will run.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from collections.abc import Iterable

import torch
from torch import nn

from squeeze.errors import UserInputError
from squeeze.targets.base import QuantRules

def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every BatchNorm that follows a Conv folded into it."""
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:
        raise UserInputError(f"quantization needs a model torch.fx can trace (a squeeze checkpoint or state_dict + --arch): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(modules.get(prev.target), nn.Conv2d)
                and len(prev.users) == 1):
            continue
        fused = fuse_conv_bn_eval(modules[prev.target], modules[node.target])
        parent, _, attr = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


class QuantBackend:
    """What the quantize pass needs from a backend."""

    name: str = ""

    def version(self) -> str: ...

    def unmet_rule(self, rules: QuantRules) -> str | None:
        """The first rule of the target this backend cannot produce, as 'rule: why'; None if all are met."""

    def quantize(self, model: nn.Module, rules: QuantRules, example: torch.Tensor, calibration: list[torch.Tensor]) -> nn.Module:
        """Insert quantizers into (a copy of) the folded float model and calibrate them (PTQ)."""

    def recalibrate(self, qmodel: nn.Module, calibration: list[torch.Tensor]) -> None:
        """Re-estimate the activation ranges on calibration data (observers on for one pass, then frozen)."""

    def refresh_weight_scales(self, qmodel: nn.Module) -> None:
        """Make weight scales match the current weights (no-op where weight ranges are frozen)."""

    def layers(self, qmodel: nn.Module) -> dict[str, list[nn.Module]]:
        """Each weighted layer (in forward order) with the quantizers removing its Q/DQ would disable."""

    def float_input_layers(self, qmodel: nn.Module, max_channels: int) -> dict[str, list[nn.Module]]:
        """Convolutions reading the model input with at most `max_channels` channels, each with the quantizers that
        disabling runs it in float while its output stays quantized (the next layer still fuses). {}: not offered."""
        return {}

    def set_enabled(self, quantizers: list[nn.Module], enabled: bool) -> None: ...

    def scales(self, qmodel: nn.Module) -> dict[str, list[float]]:
        """Per-tensor activation scales by quantizer name (for reports and tests)."""


@torch.no_grad()
def _run(qmodel: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    was = qmodel.training
    qmodel.eval()
    for x in batches:
        qmodel(x)
    qmodel.train(was)


ENTRY_POINT_GROUP = "squeeze.quant_backends"
BUILTIN: dict[str, str] = {
    "modelopt": "squeeze.passes.quantize.modelopt:ModelOptBackend",  # TensorRT's placement: tensorrt, jetson-*, cuda
    "torch-fx": "squeeze.passes.quantize.torch_fx:TorchFxBackend",  # ONNX Runtime CPU's fusable placement: cpu
    "nncf": "squeeze.passes.quantize.nncf_backend:NncfBackend",  # Intel NNCF PTQ, OpenVINO's placement: openvino
}


@lru_cache(maxsize=1)
def backend_paths() -> dict[str, str]:
    """name -> 'module:Class' of every quantization backend: built-ins, then the "squeeze.quant_backends" entry points."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            raise UserInputError(f"plugin quantization backend {ep.name!r} would shadow the built-in one; rename it")
        found[ep.name] = ep.value
    return found


def backend_names() -> list[str]:
    return list(backend_paths())


def get_backend(name: str) -> QuantBackend:
    import importlib

    paths = backend_paths()
    if name not in paths:
        raise UserInputError(f"unknown quantization backend {name!r}; choose auto, {', '.join(paths)}")
    module_name, _, attr = paths[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)()
