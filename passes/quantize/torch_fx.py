"""The `torch-fx` quantization backend: PyTorch's FX graph-mode QAT (`prepare_qat_fx` with the native backend's
patterns): quantizers on the outputs of Conv(+ReLU), Add(+ReLU), pooling, the pattern ONNX Runtime's CPU EP fuses
into QLinearConv/QLinearAdd, with uint8 affine activations. Serves cpu."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from squeeze.targets.base import QuantRules

from squeeze.passes.quantize.backends import QuantBackend, _run


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

    def float_input_layers(self, qmodel, max_channels):
        """ORT's QLinearConv on a 1-4 channel input runs ~30x fewer ops per second than on a wide one (im2col of
        K = 9-36 per pixel): the stem of an MNIST student took 18 % of its INT8 time at batch 32 for 0.4 % of its
        MACs. Run in float, it costs a Conv plus one QuantizeLinear. Only where the input's quantizer feeds
        nothing but such convolutions; their output quantizers stay, so the next layer is still a QLinearConv."""
        modules = dict(qmodel.named_modules())
        out: dict[str, list[nn.Module]] = {}
        for node in qmodel.graph.nodes:
            if node.op != "placeholder":
                continue
            for quantizer in node.users:
                if quantizer.op != "call_module" or not str(quantizer.target).startswith("activation_post_process"):
                    continue
                convs = [modules.get(u.target) if u.op == "call_module" else None for u in quantizer.users]
                if not convs or not all(isinstance(c, nn.Conv2d) and hasattr(c, "weight_fake_quant") and c.in_channels <= max_channels
                                        for c in convs):
                    continue
                for user, conv in zip(quantizer.users, convs):
                    out[str(user.target)] = [conv.weight_fake_quant, modules[quantizer.target]]
        return out

    def set_enabled(self, quantizers, enabled):
        for q in quantizers:
            q.enable_fake_quant() if enabled else q.disable_fake_quant()

    def scales(self, qmodel):
        return {n: fq.scale.flatten().tolist() for n, fq in self._activation_quantizers(qmodel).items()}
