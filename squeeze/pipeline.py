"""Pipeline runner: validates the whole pass chain before any work, then runs it in order, with a
content-keyed pass cache so that a re-run skips finished passes and a killed run resumes.

Each pass's output lives in `<cache>/<pass>-<key>/`, the key a hash of (input artifact hash, pass
config, teacher, data fingerprint, target, package versions). A pass runs with that directory as
its run_dir, so a training pass killed mid-way finds its own last checkpoint there on the re-run
and resumes; `done.json` is written (atomically) only after the pass returns, and only an entry
with `done.json` counts as finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch

from squeeze.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.errors import UserInputError
from squeeze.fsutil import write_json_atomic
from squeeze.passes.base import Context, Pass

DONE = "done.json"
CACHE_LAYOUT = 2  # bump when the entry format changes: old entries then simply miss


@dataclass
class Step:
    pass_: Pass
    config: Any


def default_cache_dir() -> Path:
    if os.environ.get("SQUEEZE_CACHE_DIR"):
        return Path(os.environ["SQUEEZE_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "squeeze" / "runs"


@dataclass
class PassCache:
    root: Path
    resume: bool = True  # False: ignore (and replace) finished entries

    def entry(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key[:20]}"


def validate(steps: list[Step], first_input: type) -> None:
    """Refuse a chain whose artifact types do not connect, before any pass starts."""
    current = first_input
    for step in steps:
        kind = step.pass_.input_kind
        if not issubclass(current, kind):
            raise UserInputError(f"pass {step.pass_.name!r} takes a {kind.__name__} but receives a {current.__name__}; fix the pass order")
        if not isinstance(step.config, step.pass_.Config):
            raise UserInputError(f"pass {step.pass_.name!r} needs a {step.pass_.Config.__name__} config")
        current = step.pass_.output_kind


def module_digest(module: torch.nn.Module, extra: Any = None) -> str:
    """A content hash of a module's weights and buffers (and `extra`, e.g. its architecture spec)."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def artifact_hash(art: Any) -> str:
    if getattr(art, "sha256", ""):
        return art.sha256
    if isinstance(art, ModelArtifact):
        return module_digest(art.module, {"arch": art.metadata.get("arch"), "kwargs": art.metadata.get("arch_kwargs")})
    raise TypeError(f"cannot hash a {type(art).__name__}")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    from squeeze import __version__

    return {"squeeze": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def step_key(step: Step, ctx: Context, input_hash: str) -> str:
    material = {
        "layout": CACHE_LAYOUT,
        "pass": step.pass_.name,
        "config": _plain(step.config),
        "input": input_hash,
        "teacher": ctx.teacher.sha256 if ctx.teacher is not None else None,
        "data": ctx.data.fingerprint if ctx.data is not None else None,
        "target": ctx.target.name,
        "device": ctx.device,
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def artifact_record(art: Any, entry: Path) -> tuple[dict[str, Any], Any]:
    """What done.json needs to bring the artifact back: its file inside the entry, and its descriptors.

    A model that is not yet a file (e.g. search's untrained student) is saved as a squeeze
    checkpoint first, and the artifact returned carries that file's hash: the next pass's key is
    then the same whether this pass just ran or was loaded from the cache.
    """
    if isinstance(art, ModelArtifact) and art.format != "checkpoint":
        from squeeze.fsutil import sha256_file
        from squeeze.modelio import save_checkpoint

        if not art.metadata.get("arch"):
            raise RuntimeError(f"pass output {art.source!r} has no architecture spec to save it by")
        path = entry / "model.pt"
        save_checkpoint(art.module, path, arch=art.metadata["arch"], arch_kwargs=art.metadata.get("arch_kwargs") or {},
                        input_spec=art.input_spec, metadata=art.metadata)
        art = dataclasses.replace(art, source=str(path), format="checkpoint", sha256=sha256_file(path))
    path = Path(art.path if isinstance(art, OnnxArtifact) else art.source).resolve()
    try:
        rel = str(path.relative_to(entry.resolve()))
    except ValueError:
        rel = None
    if isinstance(art, OnnxArtifact):
        if rel is None:  # a pass that passes its input through (profile) points at the previous entry's file
            rel = os.path.relpath(path, entry.resolve())
        return {"kind": "onnx", "path": rel, "sha256": art.sha256, "opset": art.opset, "input_spec": art.input_spec.to_dict(),
                "producer": art.producer, "parity": art.parity, "provenance": art.provenance}, art
    if rel is None or not path.is_file():
        raise RuntimeError(f"pass output {art.source!r} is not a file in its cache entry {entry}")
    return {"kind": "model", "path": rel, "sha256": art.sha256, "metadata": art.metadata, "provenance": art.provenance}, art


def load_artifact(entry: Path, record: dict[str, Any]) -> Any:
    from squeeze.modelio import load_model

    path = (entry / record["path"]).resolve()
    if record["kind"] == "onnx":
        return OnnxArtifact(path, record["sha256"], int(record["opset"]), InputSpec.from_dict(record["input_spec"]),
                            record.get("producer", ""), record.get("parity"), record.get("provenance", []))
    art = load_model(path)
    if art.sha256 != record["sha256"]:
        raise UserInputError(f"cached pass output {path} changed since it was written; delete {entry} and re-run")
    art.metadata = {**art.metadata, **record.get("metadata", {})}
    art.provenance = record.get("provenance", [])
    return art


def run(steps: list[Step], ctx: Context, artifact: Any, cache: PassCache | None = None) -> tuple[Any, list[dict[str, Any]]]:
    validate(steps, type(artifact))
    records = []
    input_hash = artifact_hash(artifact) if cache is not None else ""
    started = getattr(ctx.progress, "pass_started", lambda name: None)
    finished = getattr(ctx.progress, "pass_finished", lambda name, seconds, cached: None)
    for step in steps:
        name = step.pass_.name
        start = time.perf_counter()
        record: dict[str, Any] = {"name": name, "config": _plain(step.config)}
        started(name)
        if cache is None:
            artifact = step.pass_.run(ctx, artifact, step.config)
            records.append({**record, "seconds": round(time.perf_counter() - start, 3)})
            finished(name, records[-1]["seconds"], False)
            continue
        key = step_key(step, ctx, input_hash)
        entry = cache.entry(name, key)
        done = entry / DONE
        if done.exists() and not cache.resume:
            shutil.rmtree(entry)
        if done.exists():
            saved = json.loads(done.read_text())
            artifact = load_artifact(entry, saved["artifact"])
            ctx.results[name] = saved["result"]
            ctx.progress(f"{name}: finished earlier, reusing {entry}")
            records.append({**record, "seconds": saved["seconds"], "cached": True, "cache_entry": str(entry)})
        else:
            if entry.exists() and not cache.resume:
                shutil.rmtree(entry)
            resuming = entry.exists()
            entry.mkdir(parents=True, exist_ok=True)
            if resuming:
                ctx.progress(f"{name}: resuming the unfinished run in {entry}")
            artifact = step.pass_.run(dataclasses.replace(ctx, run_dir=entry), artifact, step.config)
            seconds = round(time.perf_counter() - start, 3)
            record_of_output, artifact = artifact_record(artifact, entry)
            write_json_atomic(done, json.loads(json.dumps({"pass": name, "key": key, "seconds": seconds, "artifact": record_of_output,
                                                           "result": ctx.results.get(name)}, default=str)))
            records.append({**record, "seconds": seconds, "cached": False, "resumed": resuming, "cache_entry": str(entry)})
        finished(name, records[-1]["seconds"], records[-1]["cached"])
        input_hash = artifact_hash(artifact)
    return artifact, records


def _plain(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
