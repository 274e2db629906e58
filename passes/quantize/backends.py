"""Quantizer placement and calibration backends for the quantize pass.

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
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from squeeze.errors import UserInputError
from squeeze.targets.base import QuantRules

BACKENDS = ("modelopt", "torch-fx")


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


# ----------------------------------------------------------------------------------------------
# torch.fx (PyTorch's graph-mode QAT)


def _fake_quantize_class():
    from torch.ao.quantization import FakeQuantize, PerChannelMinMaxObserver

    class WeightFakeQuantize(FakeQuantize):
        """Per-channel symmetric int8 weights with |q| <= max_int, scales taken from the current weights.

        ONNX export of fake-quant allows only the (-128, 127) range, so the narrower range lives in
        the scale (amax / max_int) and the op keeps (-128, 127): values never reach past max_int.
        """

        def __init__(self, max_int: int = 127, **kwargs: Any):
            super().__init__(observer=PerChannelMinMaxObserver, quant_min=-max_int, quant_max=max_int, dtype=torch.qint8,
                             qscheme=torch.per_channel_symmetric, ch_axis=0, **kwargs)
            self.max_int = max_int

        @torch.no_grad()
        def refresh(self, w: torch.Tensor) -> None:
            amax = w.detach().abs().amax(dim=tuple(range(1, w.ndim))).clamp(min=1e-8)
            scale = (amax / self.max_int).float()
            if self.scale.shape != scale.shape:
                self.scale.resize_(scale.shape)
                self.zero_point.resize_(scale.shape)
            self.scale.copy_(scale)
            self.zero_point.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training or self.scale.numel() != x.shape[0]:  # weights move every QAT step
                self.refresh(x)
            if self.fake_quant_enabled[0] == 1:
                x = torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point.int(), 0, -128, 127)
            return x

    return WeightFakeQuantize


class TorchFxBackend(QuantBackend):
    name = "torch-fx"

    def version(self) -> str:
        return f"torch {torch.__version__} (torch.ao.quantization.quantize_fx)"

    def unmet_rule(self, rules: QuantRules) -> str | None:
        if rules.signed_activations or rules.symmetric_activations or rules.zero_point_must_be_zero:
            return ("signed_activations: the torch-fx backend places quint8 (uint8, affine) activations, the only activation "
                    "dtype of PyTorch's native backend patterns; use --backend modelopt for signed symmetric int8")
        if not rules.per_channel_weights or rules.weight_channel_axis != 0:
            return "per_channel_weights: the torch-fx backend quantizes weights per output channel (axis 0) only"
        return None

    def quantize(self, model, rules, example, calibration):
        from torch.ao.quantization import FakeQuantize, MinMaxObserver, QConfig, QConfigMapping
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        weight = _fake_quantize_class().with_args(max_int=rules.weight_max_int)
        activation = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                                            qscheme=torch.per_tensor_affine, reduce_range=False)
        mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=weight))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qmodel = prepare_qat_fx(copy.deepcopy(model).train(), mapping, (example,))
        self.recalibrate(qmodel, calibration)
        return qmodel

    def _activation_quantizers(self, qmodel):
        from torch.ao.quantization import FakeQuantize

        weight_cls = {type(m.weight_fake_quant) for m in qmodel.modules() if hasattr(m, "weight_fake_quant")}
        return {n: m for n, m in qmodel.named_modules() if isinstance(m, FakeQuantize) and type(m) not in weight_cls}

    def recalibrate(self, qmodel, calibration):
        acts = self._activation_quantizers(qmodel)
        for fq in acts.values():
            fq.activation_post_process.reset_min_max_vals()
            fq.enable_observer()
        _run(qmodel, calibration)
        for fq in acts.values():
            fq.disable_observer()

    def refresh_weight_scales(self, qmodel):
        for m in qmodel.modules():
            if hasattr(m, "weight_fake_quant") and hasattr(m.weight_fake_quant, "refresh"):
                m.weight_fake_quant.refresh(m.weight)

    def layers(self, qmodel):
        modules = dict(qmodel.named_modules())
        out: dict[str, list[nn.Module]] = {}
        for node in qmodel.graph.nodes:
            module = modules.get(node.target) if node.op == "call_module" else None
            if module is None or not hasattr(module, "weight_fake_quant"):
                continue
            quantizers = [module.weight_fake_quant]
            for user in node.users:  # the output quantizer: removing it un-fuses the layer's QLinear op
                if user.op == "call_module" and str(user.target).startswith("activation_post_process"):
                    quantizers.append(modules[user.target])
            out[str(node.target)] = quantizers
        return out

    def set_enabled(self, quantizers, enabled):
        for q in quantizers:
            q.enable_fake_quant() if enabled else q.disable_fake_quant()

    def scales(self, qmodel):
        return {n: fq.scale.flatten().tolist() for n, fq in self._activation_quantizers(qmodel).items()}


# ----------------------------------------------------------------------------------------------
# NVIDIA ModelOpt


def _import_modelopt():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise UserInputError(f"the modelopt backend needs NVIDIA ModelOpt: pip install 'squeeze[quant]' ({exc})") from None
    return mtq


class ModelOptBackend(QuantBackend):
    name = "modelopt"

    def version(self) -> str:
        from importlib.metadata import version

        return f"nvidia-modelopt {version('nvidia-modelopt')}"

    def unmet_rule(self, rules: QuantRules) -> str | None:
        if not rules.signed_activations or not rules.symmetric_activations:
            return ("signed_activations: ModelOpt's INT8 quantizers are signed and symmetric (zero point 0); this target wants "
                    f"{rules.activation_dtype} affine activations: use --backend torch-fx")
        if rules.weight_max_int < 127:
            return f"weight_max_int: ModelOpt's INT8 weights use |q| <= 127; this target allows only {rules.weight_max_int}"
        if not rules.per_channel_weights or rules.weight_channel_axis != 0:
            return "per_channel_weights: the INT8 config quantizes weights per output channel (axis 0)"
        return None

    def config(self) -> dict[str, Any]:
        # ModelOpt's own INT8 config; its ONNX export refuses narrow_range, so the |q| <= 127 that
        # TensorRT wants comes from refresh_weight_scales (amax = max |w| per channel).
        return copy.deepcopy(_import_modelopt().INT8_DEFAULT_CFG)

    def quantize(self, model, rules, example, calibration):
        mtq = _import_modelopt()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qmodel = mtq.quantize(copy.deepcopy(model).eval(), self.config(), lambda m: _run(m, calibration))
        return qmodel

    def recalibrate(self, qmodel, calibration):
        mtq = _import_modelopt()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mtq.calibrate(qmodel, algorithm="max", forward_loop=lambda m: _run(m, calibration))

    @torch.no_grad()
    def refresh_weight_scales(self, qmodel):
        """amax = max |w| per output channel of the current weights, so no weight sits past ±127."""
        for m in qmodel.modules():
            wq = getattr(m, "weight_quantizer", None)
            amax = getattr(wq, "amax", None) if wq is not None else None
            if amax is None or not getattr(wq, "is_enabled", True):
                continue
            w = m.weight.detach()
            new = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) if amax.numel() > 1 else w.abs().amax()
            wq.amax = new.reshape(amax.shape).to(amax.dtype)

    def layers(self, qmodel):
        out: dict[str, list[nn.Module]] = {}
        for name, m in qmodel.named_modules():
            if hasattr(m, "weight_quantizer") and hasattr(m, "input_quantizer"):
                out[name] = [m.input_quantizer, m.weight_quantizer]
        return out

    def set_enabled(self, quantizers, enabled):
        for q in quantizers:
            q.enable() if enabled else q.disable()

    def scales(self, qmodel):
        out = {}
        for name, m in qmodel.named_modules():
            amax = getattr(m, "amax", None) if type(m).__name__ == "TensorQuantizer" and name.endswith("input_quantizer") else None
            if amax is not None and getattr(m, "is_enabled", True):
                out[name] = (amax.float().flatten() / 127.0).tolist()
        return out


def get_backend(name: str) -> QuantBackend:
    if name == "modelopt":
        return ModelOptBackend()
    if name == "torch-fx":
        return TorchFxBackend()
    raise UserInputError(f"unknown quantization backend {name!r}; choose auto, {', '.join(BACKENDS)}")
