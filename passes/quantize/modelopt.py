"""The `modelopt` quantization backend: NVIDIA ModelOpt (`mtq.INT8_DEFAULT_CFG`): quantizers on the inputs and weights
of Conv/Linear (TensorRT's placement), signed symmetric int8, zero point 0, per-channel weights on axis 0, max
calibration. Serves tensorrt / jetson-* / cuda."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from squeeze.errors import UserInputError
from squeeze.targets.base import QuantRules

from squeeze.passes.quantize.backends import QuantBackend, _run


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
