"""Model input and output.

Accepted inputs, detected by content rather than by file name:
- squeeze checkpoint (`.pt`): state_dict + architecture name + input spec, loaded with the safe
  weights-only unpickler; the architecture is rebuilt from `squeeze.*` factories, or from the
  user's `--arch module:factory`.
- state_dict (`.pt`/`.pth`) + `--arch module:factory` (+ `--input-shape`).
- `.pt2` (torch.export ExportedProgram). torch's own loader falls back to full unpickling for some
  members, so the archive is scanned first and refused without `--trust-pickle` if any member
  needs more than the weights-only unpickler.
- TorchScript (input spec from squeeze's extra file, else `--input-shape`).
- a full pickled nn.Module, only with `--trust-pickle` (unpickling runs arbitrary code).
- `.onnx` (for profile and inspect).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact, parse_input_shape
from squeeze.io.data import import_object
from squeeze.errors import UntrustedPickleError, UserInputError
from squeeze.io.fsutil import atomic_path, sha256_file, write_bytes_atomic
from squeeze.io.model_checks import check_finite_weights, check_memory

CHECKPOINT_FORMAT = "squeeze-checkpoint"
SPEC_EXTRA_FILE = "squeeze_input_spec.json"
META_EXTRA_FILE = "squeeze_metadata.json"
TRUSTED_ARCH_PREFIX = "squeeze."  # factories a checkpoint may name without the user's say-so
MAX_DYNAMIC_BATCH = 4096

PICKLE_REFUSAL = (
    "refusing to unpickle {path}: it holds {what}, and unpickling can run arbitrary code. "
    "Re-save it as a .pt2 (torch.export.save) or a state_dict (+ --arch), or pass --trust-pickle if you trust its source"
)


# ----------------------------------------------------------------------------------------------
# Format detection


def detect_format(path: Path) -> str:
    """One of: onnx, pt2, torchscript, torch-save, pickle. Raises a clear error for anything else."""
    if not path.exists():
        raise UserInputError(f"model file not found: {path}")
    if path.is_dir():
        raise UserInputError(f"model path is a directory, expected a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise UserInputError(f"model file is empty: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UserInputError(f"model file is corrupt or truncated: {path} ({exc})") from None
        if bad is not None:
            raise UserInputError(f"model file is corrupt: {path} (bad member {bad})")
        if any(n.endswith("archive_format") or n.endswith("serialized_exported_program.json") for n in names):
            return "pt2"
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-save"
        raise UserInputError(f"unrecognised zip archive {path}: not a torch.save, TorchScript or .pt2 file")
    if head[:1] == b"\x80":
        return "pickle"  # legacy (non-zip) torch.save or a plain pickle
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(path):
        return "onnx"
    raise UserInputError(f"unrecognised model file {path}: expected a .pt2, TorchScript, torch.save or .onnx file")


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return len(model.graph.node) > 0
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# Loading


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    trust_pickle: bool = False,
    output: str | None = None,
) -> ModelArtifact:
    """Load a torch model (any accepted format but ONNX) with its input spec, validated by a forward pass.
    `output`: which output of a tuple/dict model to compress (squeeze/io/outputs.py)."""
    path = Path(path)
    fmt = detect_format(path)
    shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if fmt == "onnx":
        raise UserInputError(f"{path} is an ONNX model; this command needs a torch model (.pt2, TorchScript, checkpoint)")
    loader = {"pt2": _load_pt2, "torchscript": _load_torchscript, "torch-save": _load_torch_save, "pickle": _load_torch_save}[fmt]
    art = loader(path, arch=arch, shape=shape, trust_pickle=trust_pickle)
    if art.format != "pt2":  # exported programs keep the mode they were exported in
        art.module.eval()
    check_finite_weights(art)
    check_memory(art)
    _check_forward(art, output)
    return art


def load_onnx(path: str | Path, input_shape: str | tuple[int, ...] | None = None) -> OnnxArtifact:
    """Open and validate an ONNX file; the input spec comes from its first graph input."""
    import onnx

    path = Path(path)
    if detect_format(path) != "onnx":
        raise UserInputError(f"{path} is not an ONNX model")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UserInputError(f"ONNX model is invalid or truncated: {path} ({str(exc).splitlines()[0][:200]})") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserInputError(f"{path}: squeeze handles single-input models; this one has {len(inputs)} inputs")
    dims = inputs[0].type.tensor_type.shape.dim
    recorded = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    dynamic_batch = bool(recorded) and recorded[0] is None
    shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if shape is None:
        if any(d is None for d in recorded[1:]):
            raise UserInputError(f"{path}: input {inputs[0].name!r} has dynamic non-batch dimensions; pass --input-shape")
        shape = (1, *recorded[1:])
    elif len(shape) != len(recorded) or any(r is not None and r != s for r, s in zip(recorded[1:], shape[1:])) or (
        not dynamic_batch and recorded[0] != shape[0]
    ):
        raise UserInputError(f"--input-shape {'x'.join(map(str, shape))} does not match the ONNX input {inputs[0].name!r} {recorded}")
    elem = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type).name
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    spec = InputSpec(shape=tuple(shape), name=inputs[0].name, dtype=elem, dynamic_batch=dynamic_batch)
    return OnnxArtifact(path=path, sha256=sha256_file(path), opset=opset, input_spec=spec,
                        producer=f"{model.producer_name} {model.producer_version}".strip())


def load_any(path: str | Path, **kwargs: Any) -> ModelArtifact | OnnxArtifact:
    path = Path(path)
    if detect_format(path) == "onnx":
        if kwargs.get("output") is not None:
            raise UserInputError(f"--output picks an output of a torch model; {path} is an ONNX file")
        return load_onnx(path, kwargs.get("input_shape"))
    return load_model(path, **kwargs)


def _spec_from(shape: tuple[int, ...] | None, recorded: InputSpec | None, path: Path, fmt: str) -> InputSpec:
    if shape is not None:
        if recorded is not None and (len(shape) != len(recorded.shape) or tuple(shape[1:]) != tuple(recorded.shape[1:])):
            raise UserInputError(
                f"--input-shape {'x'.join(map(str, shape))} does not match the shape recorded in {path} "
                f"({'x'.join(map(str, recorded.shape))})"
            )
        base = recorded or InputSpec(shape=tuple(shape))
        return InputSpec(tuple(shape), base.name, base.dtype, base.dynamic_batch, base.normalization)
    if recorded is None:
        raise UserInputError(f"cannot infer the input shape of {fmt} model {path}; pass --input-shape, e.g. --input-shape 1x3x32x32")
    return recorded


def _load_pt2(path: Path, *, arch: str | None, shape: tuple[int, ...] | None, trust_pickle: bool) -> ModelArtifact:
    from squeeze.io.pt2_check import check_pt2, scan_pickles

    check_pt2(path)  # fields torch evaluates as code (squeeze/pt2_check.py); always, trusted pickles or not
    if not trust_pickle:
        scan_pickles(path, PICKLE_REFUSAL)
    extra = {SPEC_EXTRA_FILE: "", META_EXTRA_FILE: ""}
    try:
        ep = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        raise UserInputError(f"cannot load .pt2 program {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    user_inputs = list(ep.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise UserInputError(f"{path}: squeeze handles single-input models; this program has {len(user_inputs)} inputs")
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
    val = node.meta["val"]
    dims = [d if isinstance(d, int) else None for d in (int(s) if not isinstance(s, torch.SymInt) else None for s in val.shape)]
    if any(d is None for d in dims[1:]):
        raise UserInputError(f"{path}: only the batch dimension may be dynamic")
    recorded = InputSpec(
        shape=(1, *dims[1:]) if dims[0] is None else tuple(dims),  # type: ignore[arg-type]
        name=user_inputs[0],
        dtype=str(val.dtype).replace("torch.", ""),
        dynamic_batch=dims[0] is None,
    )
    if extra[SPEC_EXTRA_FILE]:
        saved = InputSpec.from_dict(json.loads(extra[SPEC_EXTRA_FILE]))
        recorded = InputSpec(recorded.shape, recorded.name, recorded.dtype, recorded.dynamic_batch, saved.normalization)
    if shape is not None and not recorded.dynamic_batch and shape[0] != recorded.shape[0]:
        raise UserInputError(f"--input-shape batch {shape[0]} does not match the static batch {recorded.shape[0]} of {path}")
    spec = _spec_from(shape, recorded, path, "pt2")
    metadata = json.loads(extra[META_EXTRA_FILE]) if extra[META_EXTRA_FILE] else {}
    return ModelArtifact(ep.module(), spec, str(path), "pt2", sha256_file(path), metadata, exported_program=ep)


def _load_torchscript(path: Path, *, arch: str | None, shape: tuple[int, ...] | None, trust_pickle: bool) -> ModelArtifact:
    extra = {SPEC_EXTRA_FILE: "", META_EXTRA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise UserInputError(f"cannot load TorchScript model {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    recorded = InputSpec.from_dict(json.loads(extra[SPEC_EXTRA_FILE])) if extra[SPEC_EXTRA_FILE] else None
    spec = _spec_from(shape, recorded, path, "TorchScript")
    metadata = json.loads(extra[META_EXTRA_FILE]) if extra[META_EXTRA_FILE] else {}
    return ModelArtifact(module, spec, str(path), "torchscript", sha256_file(path), metadata)


def _load_torch_save(path: Path, *, arch: str | None, shape: tuple[int, ...] | None, trust_pickle: bool) -> ModelArtifact:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise UntrustedPickleError(PICKLE_REFUSAL.format(path=path, what="a full pickled object (not just weights)")) from None
        obj = _unsafe_load(path)
    except Exception as exc:
        raise UserInputError(f"model file is corrupt or truncated: {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    digest = sha256_file(path)

    if isinstance(obj, torch.nn.Module):
        spec = _spec_from(shape, None, path, "pickled")
        return ModelArtifact(obj, spec, str(path), "pickle", digest)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(obj, path, digest, arch=arch, shape=shape)
    state = _find_state_dict(obj)
    if state is None:
        raise UserInputError(f"{path} holds a {type(obj).__name__}, not a model: expected a state_dict, a squeeze checkpoint or an nn.Module")
    if arch is None:
        raise UserInputError(f"{path} is a state_dict: pass --arch module:factory to build the model it belongs to")
    module = _build(arch, {}, path)
    _load_state(module, state, path)
    spec = _spec_from(shape, None, path, "state_dict")
    return ModelArtifact(module, spec, str(path), "state_dict", digest, {"arch": arch})


def _unsafe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserInputError(f"cannot unpickle {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """A bare state_dict, or one under the keys training scripts commonly use."""
    if isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if key in obj:
                found = _find_state_dict(obj[key])
                if found is not None:
                    return found
    return None


def _build(arch: str, kwargs: dict[str, Any], path: Path) -> torch.nn.Module:
    factory = import_object(arch, "--arch")
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise UserInputError(f"--arch {arch} failed to build a model: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise UserInputError(f"--arch {arch} returned a {type(module).__name__}, not an nn.Module")
    return module


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines() if line.strip()][1:2]
        raise UserInputError(f"weights in {path} do not fit the architecture: {first[0][:240] if first else exc}") from None


def _from_checkpoint(obj: dict[str, Any], path: Path, digest: str, *, arch: str | None, shape: tuple[int, ...] | None) -> ModelArtifact:
    recorded_arch = str(obj.get("arch", ""))
    kwargs = obj.get("arch_kwargs") or {}
    if arch is None:
        # A file must not make us import arbitrary code: only squeeze's own factories are built implicitly.
        if not recorded_arch.startswith(TRUSTED_ARCH_PREFIX):
            raise UserInputError(f"{path} names architecture {recorded_arch!r}; pass --arch {recorded_arch} to confirm you trust that code")
        arch = recorded_arch
    else:
        kwargs = kwargs if arch == recorded_arch else {}
    module = _build(arch, kwargs, path)
    structure = obj.get("structure")
    if structure:  # a pruned model: repeat its recorded structural edits on the factory model (squeeze/structure.py)
        from squeeze.io.structure import apply_structure

        apply_structure(module, structure)
    _load_state(module, obj["state_dict"], path)
    recorded = InputSpec.from_dict(obj["input_spec"]) if obj.get("input_spec") else None
    spec = _spec_from(shape, recorded, path, "checkpoint")
    metadata = {**(obj.get("metadata") or {}), "arch": arch, "arch_kwargs": kwargs, **({"structure": structure} if structure else {})}
    return ModelArtifact(module, spec, str(path), "checkpoint", digest, metadata)


@torch.no_grad()
def _check_forward(art: ModelArtifact, output: str | None = None) -> None:
    """Run one forward pass on the input spec: catches a wrong --input-shape with one clear line."""
    shape = "x".join(map(str, art.input_spec.shape))
    try:
        out = art.module(art.input_spec.example())
    except Exception as exc:
        msg = [line for line in str(exc).splitlines() if line.strip()]
        raise UserInputError(f"input shape {shape} does not fit the model {art.source}: {msg[0][:200] if msg else type(exc).__name__}") from None
    from squeeze.io.outputs import apply

    out = apply(art, out, output)
    if not isinstance(out, torch.Tensor):
        raise UserInputError(f"{art.source}: squeeze handles models with tensor outputs; got {type(out).__name__}")
    art.output_shape = tuple(out.shape[1:])


# ----------------------------------------------------------------------------------------------
# Saving (atomic)


def save_checkpoint(
    module: torch.nn.Module,
    path: Path,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    input_spec: InputSpec,
    metadata: dict[str, Any] | None = None,
    structure: dict[str, Any] | None = None,
) -> None:
    """squeeze's own format: only tensors and plain data, so it loads with weights_only=True.

    `structure` records how a pruned model differs from its factory's (squeeze/structure.py)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "input_spec": input_spec.to_dict(),
        "metadata": json.loads(json.dumps(metadata or {})),  # plain JSON types only
    }
    if structure:
        payload["structure"] = json.loads(json.dumps(structure))
    # Saved through a buffer: torch.save names the archive's root folder after the file, and the
    # atomic write's random temp name would make identical checkpoints differ byte for byte (their
    # sha256 keys the pass cache).
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def export_program(module: torch.nn.Module, spec: InputSpec) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension (example batch 2: batch 1 would specialise)."""
    module = module.eval()
    example = spec.example(batch=2)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if spec.dynamic_batch else None
    return torch.export.export(module, (example,), dynamic_shapes=dynamic)


def save_exported_program(module: torch.nn.Module, path: Path, spec: InputSpec, metadata: dict[str, Any] | None = None) -> None:
    program = export_program(module, spec)
    extra = {SPEC_EXTRA_FILE: json.dumps(spec.to_dict()), META_EXTRA_FILE: json.dumps(metadata or {})}
    with atomic_path(Path(path)) as tmp:
        torch.export.save(program, str(tmp), extra_files=extra)


def save_torchscript(module: torch.nn.Module, path: Path, spec: InputSpec, metadata: dict[str, Any] | None = None) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still what many users ship
        scripted = torch.jit.trace(module.eval(), spec.example())
    extra = {SPEC_EXTRA_FILE: json.dumps(spec.to_dict()), META_EXTRA_FILE: json.dumps(metadata or {})}
    with atomic_path(Path(path)) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
