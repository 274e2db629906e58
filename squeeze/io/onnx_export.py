"""ONNX export: torch model -> ONNX (opset >= 17, dynamic batch), then a parity check against
ONNX Runtime on real eval samples. A parity failure is an error and leaves no file behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.errors import ParityError, UserInputError
from squeeze.io.fsutil import atomic_path, sha256_file, write_failure
from squeeze.measure.fidelity import agreement
from squeeze.targets.ort_runtime import create_session

MIN_OPSET, MAX_OPSET = 17, 23
EXPORTERS = ("dynamo", "legacy")
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18  # parsed by ORT and by TensorRT 10.x/11.x alike
    exporter: str = "dynamo"  # "legacy" = TorchScript-based; it is the one that emits QDQ for fake-quant
    dynamic_batch: bool = True
    parity_samples: int = 256
    parity_atol: float = 1e-3  # max |logit difference| allowed ...
    parity_rtol: float = 1e-4  # ... plus this fraction of the largest |logit|
    parity_min_top1: float = 0.99  # top-1 agreement torch vs ORT
    filename: str = "model.onnx"

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserInputError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {self.opset}")
        if self.exporter not in EXPORTERS:
            raise UserInputError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.parity_samples < 1 or self.parity_atol < 0 or not 0 <= self.parity_min_top1 <= 1:
            raise UserInputError("parity needs samples >= 1, atol >= 0 and min top-1 agreement in [0, 1]")


@contextlib.contextmanager
def quiet_exporter():
    """The exporters print progress to stdout and warnings to stderr; keep --json output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def mha_fast_path_off():
    """nn.MultiheadAttention's inference fast path (eval mode, no grad) runs one fused op,
    aten::_native_multi_head_attention, for which the TorchScript-based (legacy) exporter has no ONNX
    symbolic: export failed on every transformer built on nn.MultiheadAttention (torchvision's ViT).
    With the fast path off the module runs the same attention in standard ops, which export."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


_TORCHLIB_REGISTRIES: dict[Any, Any] = {}


@contextlib.contextmanager
def reused_torchlib_registry():
    """The dynamo exporter rebuilds its op registry from torchlib on every export: 0.4 s of a 1.3 s export of a
    small model, and compress exports three to five times. Within this block each export gets a fresh copy of
    one registry built once per opset (the same table the exporter would build; the copy keeps a caller's
    additions out of the next export). torch 2.13's private `_registration.ONNXRegistry`; any other layout
    leaves the exporter as it is."""
    try:
        from torch.onnx._internal.exporter import _registration

        registry_cls = _registration.ONNXRegistry
        original = registry_cls.__dict__["from_torchlib"]
        probe = registry_cls()
        if not (isinstance(original, classmethod) and isinstance(probe.functions, dict) and hasattr(probe, "_opset_version")):
            raise TypeError("another registry layout")
    except (ImportError, AttributeError, KeyError, TypeError):
        yield
        return

    def from_torchlib(cls, *args: Any, **kwargs: Any):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = original.__func__(cls, *args, **kwargs)
        built, fresh = _TORCHLIB_REGISTRIES[key], cls()
        fresh._opset_version = built._opset_version
        fresh.functions = {target: list(metas) for target, metas in built.functions.items()}
        return fresh

    registry_cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        registry_cls.from_torchlib = original


def _export_to(art: ModelArtifact, path: Path, cfg: ExportConfig, dynamic: bool) -> str:
    """Write ONNX to `path`; returns the exporter actually used."""
    spec = art.input_spec
    module = art.module
    names = {"input_names": [spec.name], "output_names": [OUTPUT_NAME]}
    use_legacy = cfg.exporter == "legacy" or isinstance(module, torch.jit.ScriptModule)  # dynamo cannot trace TorchScript
    with quiet_exporter(), torch.no_grad(), contextlib.nullcontext() if use_legacy else reused_torchlib_registry():
        if not use_legacy:
            if art.exported_program is not None and dynamic:
                program = torch.onnx.export(art.exported_program, dynamo=True, opset_version=cfg.opset, **names)
            else:
                dims = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
                example = spec.example(batch=2 if dynamic else None)  # batch 1 would specialise the dimension
                program = torch.onnx.export(module, (example,), dynamo=True, opset_version=cfg.opset, dynamic_shapes=dims, **names)
            program.save(str(path), external_data=False)
            return "dynamo"
        axes = {spec.name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
        with mha_fast_path_off():
            torch.onnx.export(module, (spec.example(),), str(path), dynamo=False, opset_version=min(cfg.opset, 20),
                              dynamic_axes=axes, do_constant_folding=True, **names)
        return "legacy"


# The last few exports of this process, by content: compress exports the teacher in every run and the last torch stage
# twice (its latency rounds and model.onnx), and each dynamo export costs 1-2 s. A hit writes the same bytes a fresh
# export would (the exporters are deterministic here) and is parity-checked against the module like any export.
_EXPORTS: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
_EXPORTS_KEPT, _EXPORT_MAX_BYTES = 8, 64 << 20
_PLAIN = (bool, int, float, str, type(None))


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's raw bytes, for hashing: through uint8, so dtypes numpy lacks (bfloat16) work too."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor_bytes(name: str, tensor: torch.Tensor) -> bytes:
    return f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode() + tensor_bytes(tensor)


def _plain(value: Any) -> bool:
    return isinstance(value, _PLAIN) or (isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value))


def _export_key(art: ModelArtifact, cfg: ExportConfig, dynamic: bool) -> str | None:
    """A digest of everything the graph depends on: each submodule's class, public attributes and tensors, the input
    and the export settings. None (no reuse) for a program, hooks, or anything it cannot read plainly."""
    if art.exported_program is not None:
        return None
    digest = hashlib.sha256(repr((art.input_spec.shape, art.input_spec.name, art.input_spec.dtype, cfg.opset, cfg.exporter,
                                  dynamic, torch.__version__)).encode())
    try:
        for name, module in art.module.named_modules():
            if module._forward_hooks or module._forward_pre_hooks:
                return None
            digest.update(f"{name}|{type(module).__module__}.{type(module).__qualname__}|{id(type(module))}".encode())
            for attr, value in sorted(vars(module).items()):
                if attr.startswith("_"):
                    continue
                if isinstance(value, torch.Tensor):
                    digest.update(_tensor_bytes(attr, value))
                elif _plain(value):
                    digest.update(f"{attr}={value!r}".encode())
                elif callable(value) and hasattr(value, "__qualname__"):
                    digest.update(f"{attr}=<{value.__qualname__} {id(value)}>".encode())
                else:
                    return None
        for name, tensor in art.module.state_dict(keep_vars=True).items():
            digest.update(_tensor_bytes(name, tensor))
    except Exception:  # a tensor with no plain bytes (quantized, sparse, meta): export it afresh
        return None
    return digest.hexdigest()


def _export_memoized(art: ModelArtifact, path: Path, cfg: ExportConfig, dynamic: bool) -> str:
    key = _export_key(art, cfg, dynamic)
    if key is not None and key in _EXPORTS:
        _EXPORTS.move_to_end(key)
        data, exporter = _EXPORTS[key]
        path.write_bytes(data)
        return exporter
    exporter = _export_to(art, path, cfg, dynamic)
    if key is not None and path.stat().st_size <= _EXPORT_MAX_BYTES:
        _EXPORTS[key] = (path.read_bytes(), exporter)
        while len(_EXPORTS) > _EXPORTS_KEPT:
            _EXPORTS.popitem(last=False)
    return exporter


def check_parity(module: torch.nn.Module, onnx_path: Path, inputs: torch.Tensor, cfg: ExportConfig,
                 static_batch: int | None = None, logits: bool | None = None) -> dict[str, Any]:
    """Compare torch and ONNX Runtime outputs on the same inputs (and batch 1, if the batch is dynamic); top-1
    agreement for class logits (`logits` None: any (N, C) output), pixel agreement for class maps."""
    with torch.no_grad():
        reference = module(inputs).float().numpy()
    session, _ = create_session(str(onnx_path), ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = inputs.numpy()
    if static_batch is None:
        got = session.run(None, {name: feed})[0]
        single = session.run(None, {name: feed[:1]})[0]  # proves the dynamic batch works at 1 too
        got_single_diff = float(np.abs(single - reference[:1]).max())
    else:
        usable = len(feed) - len(feed) % static_batch
        if usable == 0:
            raise UserInputError(f"parity needs at least {static_batch} samples for a static batch of {static_batch}")
        reference = reference[:usable]
        got = np.concatenate([session.run(None, {name: feed[i : i + static_batch]})[0] for i in range(0, usable, static_batch)])
        got_single_diff = None
    diff = np.abs(got - reference)
    max_abs = float(diff.max())
    top1 = agreement(got, reference, reference.ndim == 2 if logits is None else logits)
    limit = cfg.parity_atol + cfg.parity_rtol * float(np.abs(reference).max())
    passed = max_abs <= limit and (top1 is None or top1 >= cfg.parity_min_top1)
    if got_single_diff is not None:
        passed = passed and got_single_diff <= limit
    return {
        "samples": int(len(reference)),
        "max_abs_diff": max_abs,
        "mean_abs_diff": float(diff.mean()),
        "batch1_max_abs_diff": got_single_diff,
        "top1_agreement": top1,
        "tolerance_max_abs": limit,
        "min_top1_agreement": cfg.parity_min_top1,
        "passed": bool(passed),
    }


def parity_inputs(spec: InputSpec, data: Any, n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Real eval samples when the data fits the model's input, else seeded random inputs (and say so)."""
    if data is not None and tuple(data.sample_shape) == tuple(spec.shape[1:]):
        x, _ = data.batch("eval", n)
        return x.to(getattr(torch, spec.dtype)), f"{len(x)} samples of the eval split of {data.name}"
    if data is not None:
        raise UserInputError(f"dataset {data.name} samples have shape {list(data.sample_shape)}, the model takes {list(spec.shape[1:])}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *spec.shape[1:]), generator=generator).to(getattr(torch, spec.dtype))
    return x, f"{n} seeded random-normal inputs (no dataset given)"


def export_onnx(art: ModelArtifact, out: Path, cfg: ExportConfig, data: Any = None) -> OnnxArtifact:
    """Export `art` to `out` atomically; the file appears only if export and parity both succeed."""
    import onnx

    from squeeze.measure.analysis import evaluating

    dynamic = cfg.dynamic_batch and art.input_spec.dynamic_batch
    x, source = parity_inputs(art.input_spec, data, cfg.parity_samples)
    # the deployed graph is the inference one: BatchNorm statistics and dropout off, whatever mode the module was left in
    with atomic_path(Path(out)) as tmp, evaluating(art.module):
        try:
            exporter = _export_memoized(art, tmp, cfg, dynamic)
        except UserInputError:
            raise
        except Exception as exc:
            if write_failure(exc, Path(out)) is not None:
                raise write_failure(exc, Path(out)) from None  # a full or read-only disk, not an export bug
            raise UserInputError(f"ONNX export failed ({cfg.exporter}): {type(exc).__name__}: {str(exc).splitlines()[0][:240]}") from None
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < MIN_OPSET:
            raise UserInputError(f"exporter produced opset {opset}, below the required {MIN_OPSET}")
        input_dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        exported_dynamic = not input_dim0.HasField("dim_value")
        parity = check_parity(art.module, tmp, x, cfg, static_batch=None if exported_dynamic else art.input_spec.shape[0],
                              logits=art.output_kind(data) == "logits")
        parity["inputs"] = source
        if not parity["passed"]:
            raise ParityError(
                f"ONNX parity failed: max |diff| {parity['max_abs_diff']:.3g} (allowed {parity['tolerance_max_abs']:.3g}), "
                f"top-1 agreement {parity['top1_agreement']} (required {cfg.parity_min_top1}) on {source}"
            )
        producer = f"{model.producer_name} {model.producer_version}".strip()
    spec = InputSpec(art.input_spec.shape, art.input_spec.name, art.input_spec.dtype, exported_dynamic, art.input_spec.normalization)
    provenance = [*art.provenance, {"pass": "export", "config": asdict(cfg), "exporter": exporter, "source_sha256": art.sha256}]
    return OnnxArtifact(Path(out), sha256_file(out), opset, spec, producer, parity, provenance)
