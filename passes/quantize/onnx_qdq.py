"""QDQ export checked against the target's rules, parity ONNX Runtime vs fake-quant torch, and the speed guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeeze.io.artifacts import InputSpec, OnnxArtifact
from squeeze.errors import UserInputError
from squeeze.io.fsutil import atomic_path, sha256_file
from squeeze.measure.fidelity import agreement
from squeeze.passes.quantize.backends import QuantBackend
from squeeze.passes.quantize.qdq import enforce_rules, fold_weight_quantizers, qdq_summary, scalarize_quant_params
from squeeze.targets.base import QuantRules, Target

from squeeze.passes.quantize.config import OUTPUT_NAME, Measure, QuantizeConfig


def export_qdq(module: nn.Module, spec: InputSpec, path: Path, cfg: QuantizeConfig, rules: QuantRules | None, target: str) -> dict[str, Any]:
    """Legacy-export `module` (fake-quant or float) to `path` atomically; QDQ graphs are tidied and checked."""
    import onnx

    from squeeze.io.onnx_export import mha_fast_path_off, quiet_exporter as _quiet_exporter

    module = module.eval()
    axes = {spec.name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if spec.dynamic_batch else None
    with atomic_path(path) as tmp:
        try:
            with _quiet_exporter(), mha_fast_path_off(), torch.no_grad():
                torch.onnx.export(module, (spec.example(),), str(tmp), dynamo=False, opset_version=cfg.opset, input_names=[spec.name],
                                  output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
        except Exception as exc:
            raise UserInputError(f"QDQ ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:240]}") from None
        model = onnx.load(str(tmp))
        if rules is not None:
            model = scalarize_quant_params(fold_weight_quantizers(model, rules.weight_max_int))
            onnx.checker.check_model(model)
            enforce_rules(model, rules, target)
            onnx.save(model, str(tmp))
        summary = qdq_summary(model)
        if rules is not None and rules.ort_cpu_kernels:
            summary["ort_fusion"] = ort_fusion_report(tmp)
    return summary


def ort_fusion_report(path: Path, optimization: str = "extended") -> dict[str, Any]:
    """The graph ONNX Runtime's CPU EP runs after its QDQ fusions. A DequantizeLinear with a QuantizeLinear
    downstream is a pair ORT could not fuse: the ops between run in float and pay a dequantize/quantize round
    trip (the 'extended' level: every QDQ fusion, no NCHWc layout). The entry QuantizeLinear (after the input,
    or after float input layers) and the exit DequantizeLinear are no pair."""
    import tempfile
    from collections import Counter

    import onnx
    import onnxruntime as ort

    from squeeze.targets.ort_runtime import session_options

    with tempfile.TemporaryDirectory(prefix="squeeze-fusion-") as tmp:
        options = session_options(threads=1, optimization=optimization)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    after_dq: set[str] = set()  # tensors with a DequantizeLinear upstream (graph.node is topologically sorted)
    for n in graph.node:
        if n.op_type == "DequantizeLinear" or any(i in after_dq for i in n.input):
            after_dq.update(n.output)
    before_q: set[str] = set()  # tensors with a QuantizeLinear downstream
    for n in reversed(graph.node):
        if n.op_type == "QuantizeLinear" or any(o in before_q for o in n.output):
            before_q.update(n.input)
    unfused = [n.name for n in graph.node if (n.op_type == "QuantizeLinear" and n.input[0] in after_dq)
               or (n.op_type == "DequantizeLinear" and n.output[0] in before_q)]
    return {"optimization": optimization, "ops": dict(Counter(n.op_type for n in graph.node)), "unfused_qdq": unfused,
            "fully_fused": not unfused}


@torch.no_grad()
def check_parity(module: nn.Module, path: Path, x: torch.Tensor, cfg: QuantizeConfig, logits: bool = True) -> dict[str, Any]:
    """ORT logits vs the fake-quant torch model's on the same real samples.

    INT8 kernels and fake-quant round the same values but accumulate in different orders (int32 vs
    float), so a value sitting on a rounding boundary can land one quantization step apart and the
    step propagates: the tolerance is a fraction of the logits' range, plus top-1 agreement (pixel
    agreement for class maps, none for regression values: `logits` False)."""
    from squeeze.targets.ort_runtime import create_session

    reference = module.eval()(x).float().numpy()
    session, _ = create_session(str(path), ["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = np.abs(got - reference)
    spread = float(reference.max() - reference.min())
    limit = cfg.parity_rel_tol * spread
    top1 = agreement(got, reference, logits)
    return {"samples": int(len(x)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "logit_range": spread, "tolerance_max_abs": limit, "top1_agreement": top1, "min_top1_agreement": cfg.parity_min_top1,
            "passed": bool(diff.max() <= limit and (top1 is None or top1 >= cfg.parity_min_top1))}


def target_measure(target: Target, spec: InputSpec, cfg: QuantizeConfig) -> Measure:
    """p50 latency of each file on the target from one interleaved comparison (squeeze/measure/latency.py):
    rounds of one block per file, more rounds while the ratio to the first file is loose."""
    from squeeze.measure.latency import MeasureConfig, compare

    settings = MeasureConfig(block_iterations=cfg.latency_iterations, warmup=5, min_rounds=cfg.latency_rounds,
                             max_rounds=3 * cfg.latency_rounds, time_cap_s=30.0, threads=cfg.threads,
                             tune="threads")

    def measure(paths: list[Path]) -> list[float]:
        arts = {f"{i}:{p.name}": OnnxArtifact(p, sha256_file(p), cfg.opset, spec) for i, p in enumerate(paths)}
        names = list(arts)
        result = compare(target, arts, settings, reference=names[0])
        return [result.latency(n) for n in names]
    return measure


def speed_guard(qmodel: nn.Module, backend: QuantBackend, float_path: Path, int8_path: Path, spec: InputSpec, cfg: QuantizeConfig,
                rules: QuantRules, target: str, measure: Measure, progress=lambda m: None, already_float: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Float vs INT8 on the target. If INT8 is not faster, greedily drop the Q/DQ of one layer at a time
    (kept only when it made the model faster) until INT8 wins or every layer was tried.

    Leaves the best INT8 model at int8_path and its quantizer switches in qmodel."""
    float_ms, int8_ms = measure([float_path, int8_path])
    out: dict[str, Any] = {"measured": True, "float_p50_ms": float_ms, "int8_p50_ms": int8_ms, "initial_int8_p50_ms": int8_ms,
                           "decisions": [], "excluded_layers": []}
    progress(f"latency p50: float {float_ms:.3f} ms, INT8 {int8_ms:.3f} ms")
    if int8_ms < float_ms:
        out["verdict"] = "int8 faster"
        return out
    progress("INT8 is not faster than float here; trying to exclude the layers that lose")
    candidate = int8_path.with_name(".candidate.onnx")
    for layer, quantizers in backend.layers(qmodel).items():
        if layer in already_float:  # the input layers float_input_layers already runs in float
            continue
        backend.set_enabled(quantizers, False)
        export_qdq(qmodel, spec, candidate, cfg, rules, target)
        best_ms, cand_ms = measure([int8_path, candidate])
        keep = cand_ms < best_ms
        out["decisions"].append({"layer": layer, "int8_p50_ms": best_ms, "without_qdq_p50_ms": cand_ms,
                                 "decision": "run in float (faster without Q/DQ)" if keep else "keep INT8"})
        if keep:
            candidate.replace(int8_path)
            out["excluded_layers"].append(layer)
            out["float_p50_ms"], int8_ms = measure([float_path, int8_path])  # re-measure side by side: is INT8 faster now?
            if int8_ms < out["float_p50_ms"]:
                break
        else:
            backend.set_enabled(quantizers, True)
    candidate.unlink(missing_ok=True)
    out["int8_p50_ms"] = int8_ms
    out["verdict"] = "int8 faster after exclusions" if int8_ms < out["float_p50_ms"] else "int8 slower"
    return out
