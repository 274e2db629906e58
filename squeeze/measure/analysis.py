"""Model statistics: parameters, MACs and a per-layer summary, for torch modules and ONNX graphs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import contextlib
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the block, then the previous mode back.

    Modules from a .pt2 (torch.export) refuse .eval()/.train(): their mode was fixed at export time.
    """
    was_training = module.training
    try:
        module.eval()
    except NotImplementedError:
        yield module
        return
    try:
        yield module
    finally:
        module.train(was_training)


def eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    """`module.eval()` where the module allows it; a .pt2 (torch.export) module keeps the mode it was exported in."""
    try:
        module.eval()
    except NotImplementedError:
        pass
    return module


def count_params(module: torch.nn.Module) -> int:
    params = sum(p.numel() for p in module.parameters())
    if params == 0:  # TorchScript / graph modules may hold weights as buffers or constants
        params = sum(t.numel() for t in module.state_dict().values() if torch.is_floating_point(t))
    return int(params)


@torch.no_grad()
def count_macs(module: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates for one forward pass on `example` (FLOPs / 2, counted by torch's dispatcher)."""
    with evaluating(module), FlopCounterMode(display=False) as counter:
        module(example)
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def layer_summary(module: torch.nn.Module, example: torch.Tensor) -> list[dict[str, Any]]:
    """One row per leaf module that ran: name, type, output shape, params and MACs.

    A torch.export graph (a .pt2's `ExportedProgram.module()`) never calls its submodules, so its
    rows come from the module paths the exporter recorded on each graph node instead.
    """
    if _module_stacks(module):
        return _graph_layer_summary(module, example)  # type: ignore[arg-type]
    rows: dict[str, dict[str, Any]] = {}
    hooks = []
    leaves = [(name, m) for name, m in module.named_modules() if name and not any(True for _ in m.children())]

    def record(name: str, m: torch.nn.Module):
        def hook(_m, _inp, out):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else None
            rows.setdefault(name, {"name": name, "type": type(m).__name__, "output_shape": shape,
                                   "params": sum(p.numel() for p in m.parameters(recurse=False)), "macs": 0})
        return hook

    for name, m in leaves:
        hooks.append(m.register_forward_hook(record(name, m)))
    try:
        with evaluating(module), FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        for h in hooks:
            h.remove()
    # FlopCounterMode keys modules as "<RootClass>.<dotted name>"
    root = type(module).__name__
    for key, ops in counter.get_flop_counts().items():
        name = key[len(root) + 1 :] if key.startswith(root + ".") else None
        if name in rows:
            rows[name]["macs"] = int(sum(ops.values()) // 2)
    return [row for row in rows.values() if row["output_shape"] is not None]  # drops e.g. export guard fns


def _module_stacks(module: torch.nn.Module) -> dict[torch.fx.Node, tuple[str, str]]:
    """The innermost recorded module path of each call_function node of an exported graph, else {}."""
    if not isinstance(module, torch.fx.GraphModule):
        return {}
    stacks = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        if stack:
            path, qualname = list(stack.values())[-1]
            stacks[node] = (path, qualname if isinstance(qualname, str) else getattr(qualname, "__name__", str(qualname)))
    return stacks


def _graph_layer_summary(module: torch.fx.GraphModule, example: torch.Tensor) -> list[dict[str, Any]]:
    """layer_summary's rows for an exported graph: each node's MACs go to the leaf module it came from.

    A leaf is a recorded module path with no recorded path below it (the .pt path's leaf modules that
    ran ops); ops of container modules (a residual add, a flatten in forward) get no row, as there.
    The output shape is the last node of the module's first call; MACs add up over every call.
    """
    stacks = _module_stacks(module)
    paths = {path for path, _ in stacks.values()}
    leaves = {p for p in paths if p and not any(q.startswith(p + ".") for q in paths)}
    rows = {p: {"name": p, "type": t.rsplit(".", 1)[-1], "output_shape": None, "params": _own_params(module, p), "macs": 0}
            for p, t in stacks.values() if p in leaves}
    finished: set[str] = set()  # modules whose first call is over: a later call keeps the first call's shape

    class Recorder(torch.fx.Interpreter):
        previous: str | None = None  # the module of the last node that came from one

        def run_node(self, node: torch.fx.Node) -> Any:
            before = counter.get_total_flops()
            out = super().run_node(node)
            if node not in stacks:
                return out
            path = stacks[node][0]
            if self.previous is not None and path != self.previous:
                finished.add(self.previous)
            self.previous = path
            if path in rows:
                rows[path]["macs"] += int((counter.get_total_flops() - before) // 2)
                if path not in finished and isinstance(out, torch.Tensor):
                    rows[path]["output_shape"] = list(out.shape)
            return out

    with evaluating(module), FlopCounterMode(display=False) as counter:
        Recorder(module).run(example)
    return [row for row in rows.values() if row["output_shape"] is not None]


def _own_params(module: torch.nn.Module, path: str) -> int:
    try:
        sub = module.get_submodule(path)
    except AttributeError:  # a leaf without weights (ReLU, pooling) has no holder in the graph module
        return 0
    return int(sum(p.numel() for p in sub.parameters(recurse=False)))


def op_histogram(module: torch.nn.Module) -> dict[str, int]:
    """Count of layer types (nn.Module leaves), or of graph ops for graph modules without them."""
    leaves = Counter(type(m).__name__ for n, m in module.named_modules() if n and not any(True for _ in m.children()))
    if isinstance(module, torch.fx.GraphModule) and not any(k in leaves for k in ("Conv2d", "Linear")):
        ops = Counter(str(node.target).replace("aten.", "").split(".")[0] for node in module.graph.nodes if node.op == "call_function")
        return dict(ops.most_common())
    return dict(leaves.most_common())


def onnx_summary(path: Path) -> dict[str, Any]:
    """Inputs, outputs, opset, op counts, parameter count and Conv/Gemm/MatMul MACs of an ONNX file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    init = {t.name: t for t in graph.initializer}

    def dims(value_info) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]

    shapes = {vi.name: dims(vi) for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
    for t in graph.initializer:
        shapes[t.name] = list(t.dims)

    def known(shape: list[Any]) -> list[int]:
        return [d if isinstance(d, int) and d > 0 else 1 for d in shape]  # dynamic batch counted as 1

    macs = 0
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in shapes and node.output[0] in shapes:
            w = shapes[node.input[1]]  # [out, in/groups, kh, kw]
            out = known(shapes[node.output[0]])
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in shapes and node.output[0] in shapes:
            b = shapes[node.input[1]]
            if node.op_type == "MatMul":
                k = b[-2] if len(b) >= 2 else b[0]
            else:  # Gemm: B is [K, N], or [N, K] when transB
                k = b[-1] if any(a.name == "transB" and a.i for a in node.attribute) else b[0]
            if isinstance(k, int):
                macs += int(np.prod(known(shapes[node.output[0]]))) * k
    # Weights: float initializers, and the integer ones a DequantizeLinear turns into weights (QDQ
    # models). Quantization scales and zero points are bookkeeping, not parameters.
    qdq_meta = {name for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for name in n.input[1:]}
    dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    params = sum(int(np.prod(t.dims)) for name, t in init.items()
                 if name not in qdq_meta and (numpy_helper.to_array(t).dtype.kind == "f" or name in dequantized))
    return {
        "inputs": [{"name": i.name, "shape": dims(i)} for i in graph.input if i.name not in init],
        "outputs": [{"name": o.name, "shape": dims(o)} for o in graph.output],
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(graph.node),
        "ops": dict(Counter(n.op_type for n in graph.node).most_common()),
        "params": params,
        "macs": macs,
    }
