"""The `nncf` quantization backend: Intel NNCF's post-training quantization (`nncf.quantize`, torch backend,
performance preset for the CPU device) on the folded float model, then the quantize pass's QAT through the
shared trainer. NNCF's placement is OpenVINO's: symmetric per-tensor activations (uint8 with zero point 0
after a ReLU, int8 elsewhere), symmetric int8 per-channel weights (axis 0, |q| <= 127), quantizers on the
inputs of Conv/Linear/Add/pooling. The quantizers export as ONNX QuantizeLinear/DequantizeLinear pairs,
which OpenVINO's ONNX frontend turns into FakeQuantize ops that its low-precision transformations run as
INT8 kernels. Serves openvino.

Why the torch backend on a plain `nn.Module`: NNCF sends an `fx.GraphModule` (what BatchNorm folding
returns) to its torch.fx backend, which needs torchao; wrapped in a plain module it takes the
function-hook torch backend, which needs only torch (and JIT-compiles a small C++ extension once).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings

import torch
from torch import nn

from squeeze.errors import UserInputError
from squeeze.targets.base import QuantRules

from squeeze.passes.quantize.backends import QuantBackend, _run

WEIGHT_OPS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear")


def _import_nncf():
    # NNCF compiles its CPU extension on first use (about a minute on 2 cores): its default 60 s timeout
    # would fail that build on a loaded host, so the timeout is off unless the user set one.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import nncf
            from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode
    except ImportError as exc:
        raise UserInputError(f"the nncf backend needs NNCF: pip install 'squeeze[openvino]' ({exc})") from None
    return nncf, BaseQuantizer, QuantizerExportMode


class _Plain(nn.Module):
    """A plain module around the folded GraphModule, so NNCF takes its torch backend (see the module doc)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _quantizers(qmodel: nn.Module) -> dict[str, tuple[str, int, nn.Module]]:
    """Hook name -> (NNCF op name, port, quantizer). A pre-hook on port 1 of a Conv/Linear op quantizes its weight."""
    _, base, _ = _import_nncf()
    out = {}
    for name, module in qmodel.named_modules():
        if not isinstance(module, base):
            continue
        key = name.rsplit(".", 2)[-2]  # <storage>.<pre_hooks|post_hooks>.<op>__<port>.<index>
        op, _, port = key.rpartition("__")
        out[name] = (op.replace(":", "."), int(port) if name.split(".")[-3] == "pre_hooks" else -1, module)
    return out


def _is_weight(op: str, port: int) -> bool:
    return port == 1 and op.rsplit("/", 2)[-2] in WEIGHT_OPS


class NncfBackend(QuantBackend):
    name = "nncf"

    def version(self) -> str:
        from importlib.metadata import version

        return f"nncf {version('nncf')} (nncf.quantize, torch backend, performance preset, CPU device)"

    def unmet_rule(self, rules: QuantRules) -> str | None:
        if rules.signed_activations:
            return ("signed_activations: NNCF's performance preset quantizes the output of a ReLU as uint8 (zero point 0); "
                    "use --backend modelopt for signed int8 everywhere")
        if rules.weight_max_int < 127:
            return (f"weight_max_int: NNCF's INT8 weights use |q| <= 127; this target allows only {rules.weight_max_int} "
                    "(use --backend torch-fx)")
        if not rules.per_channel_weights or rules.weight_channel_axis != 0:
            return "per_channel_weights: NNCF quantizes weights per output channel (axis 0)"
        return None

    def quantize(self, model, rules, example, calibration):
        nncf, _, export_mode = _import_nncf()
        import logging

        nncf.set_log_level(logging.ERROR)
        # NNCF draws rich progress bars on stdout: keep them off a `--json` document
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            qmodel = nncf.quantize(_Plain(copy.deepcopy(model).eval()), nncf.Dataset(calibration), preset=nncf.QuantizationPreset.PERFORMANCE,
                                   target_device=nncf.TargetDevice.CPU, subset_size=len(calibration))
        for _, _, q in _quantizers(qmodel).values():
            # ONNX Q/DQ pairs instead of NNCF's custom org.openvinotoolkit FakeQuantize op: standard ONNX, so ONNX
            # Runtime can check parity and squeeze's QDQ rules apply; OpenVINO reads Q/DQ as FakeQuantize anyway
            q.set_export_mode(export_mode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
            # the pass's QAT semantics: activation scales frozen after PTQ (re-estimated only by recalibrate),
            # weight scales follow the weights (refresh_weight_scales), never trained as NNCF's own QAT would
            q.disable_gradients()
        # which parameter each weight quantizer sees, kept on the model (deepcopy and the trainer's copies carry it)
        object.__setattr__(qmodel, "_squeeze_weight_params", _trace_weight_params(qmodel, example))
        return qmodel.train()

    def _activations(self, qmodel) -> dict[str, nn.Module]:
        return {n: q for n, (op, port, q) in _quantizers(qmodel).items() if not _is_weight(op, port)}

    @torch.no_grad()
    def recalibrate(self, qmodel, calibration):
        """Symmetric ranges from the calibration data: scale = max |x| seen at each activation quantizer (NNCF's
        symmetric quantizer stores the range itself; unsigned ones start at 0)."""
        acts = self._activations(qmodel)
        seen: dict[str, float] = {}

        def record(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                seen[name] = max(seen.get(name, 0.0), float(args[0].abs().max()))
            return hook

        hooks = [q.register_forward_pre_hook(record(n)) for n, q in acts.items()]
        try:
            for q in acts.values():
                q.disable_quantization()  # observe the float activations, as PTQ does
            _run(qmodel, calibration)
        finally:
            for h in hooks:
                h.remove()
            for q in acts.values():
                q.enable_quantization()
                q.disable_gradients()
        for n, q in acts.items():
            if seen.get(n, 0.0) > 0:
                _set_scale(q, torch.full_like(q.scale.detach(), seen[n]))

    @torch.no_grad()
    def refresh_weight_scales(self, qmodel):
        """Weight ranges = max |w| per output channel of the current weights, so no weight is clipped."""
        params = getattr(qmodel, "_squeeze_weight_params", {})
        for op, port, q in _quantizers(qmodel).values():
            if _is_weight(op, port) and op in params:
                w = qmodel.get_parameter(params[op]).detach()
                _set_scale(q, w.abs().amax(dim=tuple(range(1, w.ndim))).clamp(min=1e-8))

    def layers(self, qmodel):
        """Each Conv/Linear op with its weight quantizer: without it OpenVINO runs that layer in float."""
        return {op: [q] for op, port, q in _quantizers(qmodel).values() if _is_weight(op, port)}

    def set_enabled(self, quantizers, enabled):
        for q in quantizers:
            q.enable_quantization() if enabled else q.disable_quantization()
            q.disable_gradients()  # enable_quantization turns the scale's gradient back on

    def scales(self, qmodel):
        """Activation quantizers' scales as ONNX writes them (range / 127 signed, range / 255 unsigned)."""
        out = {}
        for n, q in self._activations(qmodel).items():
            out[n] = (q.scale.detach().float().flatten() / float(q.level_high)).tolist()
        return out


def _trace_weight_params(qmodel: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """NNCF op name -> the name of the parameter its weight quantizer quantizes, from one forward: the hook names
    ops by call order ("net/conv2d/3"), not by module, so the tensor each weight quantizer sees is recorded."""
    params = {id(p): n for n, p in qmodel.named_parameters()}
    found: dict[str, str] = {}
    quantizers = {op: q for op, port, q in _quantizers(qmodel).values() if _is_weight(op, port)}

    def record(op: str):
        def hook(module: nn.Module, args: tuple) -> None:  # a pre-hook that returned a value would replace the input
            found.setdefault(op, params.get(id(args[0]), ""))
        return hook

    hooks = [q.register_forward_pre_hook(record(op)) for op, q in quantizers.items()]
    try:
        _run(qmodel, [example[:1]])
    finally:
        for h in hooks:
            h.remove()
    return {op: p for op, p in found.items() if p}


def _set_scale(q: nn.Module, value: torch.Tensor) -> None:
    """Through the quantizer's state dict, whose hooks handle NNCF's optional log-scale storage."""
    q.load_state_dict({**q.state_dict(), "scale": value.reshape(q.scale.shape).to(q.scale.dtype)})
