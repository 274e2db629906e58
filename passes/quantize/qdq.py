"""QDQ ONNX graphs: tidy what the exporter writes, and check it against a target's QuantRules.

The checker is used both by the tests and at run time: an INT8 model that breaks a rule of its
target (a non-zero zero point for TensorRT, a uint8 activation, a weight scale that is not
per-channel on axis 0, an op the runtime cannot run) is an error naming the rule and the node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeeze.errors import UserInputError
from squeeze.targets.base import QuantRules

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHT_CONSUMERS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}  # op -> index of its weight input


class QuantRulesError(UserInputError):
    """The exported INT8 graph breaks a rule of the target's runtime."""


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    detail: str

    def __str__(self) -> str:
        return f"rule {self.rule} broken at node {self.node!r}: {self.detail}"


class _Graph:
    """Name lookups over one ONNX graph: constants, producers, consumers."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.constants: dict[str, np.ndarray] = {name: numpy_helper.to_array(t) for name, t in self.initializers.items()}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def value(self, name: str) -> np.ndarray | None:
        """The constant behind `name`, following the Identity nodes the exporter uses to share constants."""
        for _ in range(16):
            if name in self.constants:
                return self.constants[name]
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return None


def _axis(node) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return int(attr.i)
    return 1  # the ONNX default


def fold_weight_quantizers(model, weight_max_int: int | None = None):
    """QuantizeLinear(float weight initializer) -> an int8 initializer feeding the DequantizeLinear.

    The legacy exporter leaves float weights behind a QuantizeLinear; storing them as int8 is what
    TensorRT's and ModelOpt's own QDQ graphs look like, and the file is ~4x smaller. Values are
    clamped to ±weight_max_int: the torch quantizers clamp the same way, so parity holds.
    Also drops float->float Casts the exporter inserts (no-ops). Returns the model, changed in place.
    """
    from onnx import TensorProto, numpy_helper

    g = _Graph(model)
    remove, new_inits = [], []
    floats = _float_tensors(model)
    outputs = {o.name for o in g.graph.output}
    for node in g.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == TensorProto.FLOAT and node.input[0] in floats and node.output[0] not in outputs:
            for consumer in g.consumers.get(node.output[0], []):
                consumer.input[:] = [node.input[0] if i == node.output[0] else i for i in consumer.input]
            remove.append(node)
    for node in g.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in g.initializers:
            continue
        weight, scale = g.value(node.input[0]), g.value(node.input[1])
        zero = g.value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if weight is None or scale is None or zero is None or weight.dtype != np.float32:
            continue
        axis = _axis(node)
        shape = [1] * weight.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = scale.size
        info = np.iinfo(zero.dtype)
        lo, hi = info.min, info.max
        if weight_max_int is not None and zero.dtype == np.int8:
            lo, hi = -weight_max_int, weight_max_int
        q = np.rint(weight / scale.reshape(shape)) + zero.astype(np.int32).reshape(shape if zero.ndim else [])
        q = np.clip(q, lo, hi).astype(zero.dtype)
        name = node.input[0] + "_quantized"
        new_inits.append(numpy_helper.from_array(q, name))
        for consumer in g.consumers.get(node.output[0], []):
            consumer.input[:] = [name if i == node.output[0] else i for i in consumer.input]
        remove.append(node)
    for node in remove:
        g.graph.node.remove(node)
    g.graph.initializer.extend(new_inits)
    used = {i for node in g.graph.node for i in node.input}
    for init in list(g.graph.initializer):
        if init.name not in used and init.name not in {i.name for i in g.graph.input}:
            g.graph.initializer.remove(init)
    return model


def scalarize_quant_params(model):
    """One-element scale / zero-point tensors of per-tensor Q/DQ nodes become scalars (rank 0).

    The legacy exporter writes per-tensor parameters with shape (1,). ONNX Runtime's CPU QDQ fusions for
    Add/Mul (QLinearAdd), pooling and double Q/DQ pairs accept only scalars, so with (1,) every residual
    Add ran in float between a DequantizeLinear and a QuantizeLinear. Identity nodes in front of such
    constants (the exporter's shared-initializer copies) are bypassed. Same values: numerically identical.
    Returns the model, changed in place."""
    from onnx import numpy_helper

    g = _Graph(model)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    outputs = {o.name for o in g.graph.output}
    for node in list(g.graph.node):  # Identity(initializer) feeding only Q/DQ parameters: use the initializer directly
        if node.op_type == "Identity" and node.input[0] in g.initializers and node.output[0] not in outputs:
            consumers = g.consumers.get(node.output[0], [])
            if consumers and all(c.op_type in qdq and list(c.input).index(node.output[0]) > 0 for c in consumers):
                for c in consumers:
                    c.input[:] = [node.input[0] if i == node.output[0] else i for i in c.input]
                g.graph.node.remove(node)
    g = _Graph(model)
    for init in g.graph.initializer:
        if len(init.dims) != 1 or init.dims[0] != 1:
            continue
        users = g.consumers.get(init.name, [])
        if users and all(u.op_type in qdq and init.name in u.input[1:] and init.name != u.input[0] for u in users):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(()), init.name))
    return model


def _float_tensors(model) -> set[str]:
    """Names of float32 tensors, by ONNX shape inference."""
    from onnx import TensorProto, shape_inference

    inferred = shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT}


def _constant_input(g: _Graph, dq) -> bool:
    """The DequantizeLinear dequantizes a constant (an int8 weight, or QuantizeLinear of a float weight not yet folded)."""
    if g.value(dq.input[0]) is not None:
        return True
    q = g.producer.get(dq.input[0])
    return q is not None and q.op_type == "QuantizeLinear" and g.value(q.input[0]) is not None


def weight_dequantizers(g: _Graph) -> set[str]:
    """Names of DequantizeLinear nodes whose output is a Conv/Gemm/MatMul weight."""
    names = set()
    for node in g.graph.node:
        index = WEIGHT_CONSUMERS.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        src = g.producer.get(node.input[index])
        if node.op_type == "MatMul":
            # nn.Linear on a 3-D+ input (transformer MLPs, ConvNeXt's channels-last block) exports as
            # MatMul(x, Transpose(DequantizeLinear(W))): the weight's dequantizer sits behind the Transpose.
            # Only a constant is a weight: q @ k.T and attn @ v in hand-written attention multiply two activations.
            if src is not None and src.op_type == "Transpose":
                src = g.producer.get(src.input[0])
            if src is None or src.op_type != "DequantizeLinear" or not _constant_input(g, src):
                continue
        if src is not None and src.op_type == "DequantizeLinear":
            names.add(src.name or src.output[0])
    return names


def check_qdq_graph(model, rules: QuantRules) -> list[Violation]:
    """Every way `model` breaks `rules` (empty list: the graph is legal for the target)."""
    g = _Graph(model)
    found: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < rules.min_opset:
        found.append(Violation("min_opset", "<model>", f"opset {opset} < {rules.min_opset} (per-channel Q/DQ needs opset 13)"))
    for node in g.graph.node:
        if node.domain not in rules.onnx_domains:
            found.append(Violation("onnx_domains", node.name or node.output[0], f"op {node.domain}::{node.op_type} is not a standard ONNX op this runtime runs"))
    weights = weight_dequantizers(g)
    qdq = [n for n in g.graph.node if n.op_type in QDQ_OPS]
    if not qdq:
        found.append(Violation("qdq_present", "<model>", "no QuantizeLinear/DequantizeLinear nodes: the model is not quantized"))
    for node in qdq:
        name = node.name or node.output[0]
        scale = g.value(node.input[1])
        zero = g.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        dtype = zero.dtype if zero is not None else (g.value(node.input[0]).dtype if node.op_type == "DequantizeLinear" and g.value(node.input[0]) is not None else np.dtype(np.uint8))
        is_weight = node.op_type == "DequantizeLinear" and name in weights
        if dtype == np.int32:
            if not rules.quantized_bias:
                found.append(Violation("quantized_bias", name, "int32 DequantizeLinear (quantized bias); keep biases float for this runtime"))
            continue
        if dtype not in (np.int8, np.uint8):
            found.append(Violation("int8_only", name, f"{node.op_type} uses {dtype}; only int8/uint8 Q/DQ are checked for INT8 targets"))
            continue
        if dtype == np.uint8 and (rules.signed_activations or is_weight):
            found.append(Violation("signed_activations" if not is_weight else "symmetric_weights", name,
                                   "uint8 Q/DQ; this runtime needs signed int8 (zero point 0)"))
        if zero is not None and np.any(zero != 0):
            if rules.zero_point_must_be_zero or (is_weight and rules.symmetric_weights) or (not is_weight and rules.symmetric_activations):
                found.append(Violation("zero_point_must_be_zero" if rules.zero_point_must_be_zero else "symmetric",
                                       name, f"non-zero zero point {np.unique(zero)[:4].tolist()}"))
        if scale is None:
            found.append(Violation("constant_scales", name, "scale is not a constant"))
            continue
        if is_weight:
            if rules.per_channel_weights and (scale.ndim != 1 or _axis(node) != rules.weight_channel_axis):
                found.append(Violation("per_channel_weights", name,
                                       f"weight scale shape {list(scale.shape)} on axis {_axis(node)}; need one scale per output channel on axis {rules.weight_channel_axis}"))
            q = g.value(node.input[0])
            if q is not None and q.size and int(np.abs(q.astype(np.int32)).max()) > rules.weight_max_int:
                found.append(Violation("weight_max_int", name, f"weights reach |q| = {int(np.abs(q.astype(np.int32)).max())} > {rules.weight_max_int}"))
        elif scale.ndim != 0 and scale.size != 1:
            found.append(Violation("per_tensor_activations", name, f"activation scale has shape {list(scale.shape)}; runtimes expect one scale per tensor"))
    return found


def enforce_rules(model, rules: QuantRules, target: str) -> None:
    violations = check_qdq_graph(model, rules)
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise QuantRulesError(f"the INT8 graph is not legal for target {target}: {violations[0]}{more}")


def qdq_summary(model) -> dict[str, Any]:
    """Counts a reader can check: Q/DQ nodes, their dtypes, quantized weights, ops."""
    g = _Graph(model)
    dtypes: Counter[str] = Counter()
    for node in g.graph.node:
        if node.op_type in QDQ_OPS and len(node.input) > 2:
            zero = g.value(node.input[2])
            if zero is not None:
                dtypes[f"{node.op_type}:{zero.dtype}"] += 1
    weights = weight_dequantizers(g)
    layers = [n for n in g.graph.node if n.op_type in WEIGHT_CONSUMERS]
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in g.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in g.graph.node),
        "zero_point_dtypes": dict(dtypes),
        "layers": len(layers),
        "layers_with_int8_weights": len(weights),
        "ops": dict(Counter(n.op_type for n in g.graph.node)),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
    }
