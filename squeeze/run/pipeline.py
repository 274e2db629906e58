"""Pipeline runner: validates the whole pass chain before any work, then runs it in order, with a
content-keyed pass cache so that a re-run skips finished passes and a killed run resumes.

Each pass's output lives in `<cache>/<pass>-<key>/`, the key a hash of (input artifact hash, pass
config, teacher, data fingerprint, target, package versions). A pass runs with that directory as
its run_dir, so a training pass killed mid-way finds its own last checkpoint there on the re-run
and resumes; `done.json` is written (atomically) only after the pass returns, and only an entry
with `done.json` counts as finished.

A cache hit is verified before anything is reused: done.json must parse and have its fields, and
every file it names must match the sha256 recorded when it was written. A damaged entry is
reported in one line, discarded and recomputed (never shipped, never an internal error). An entry
is locked (flock on `<entry>.lock`) while it is read or computed, so two runs never train in it
at once: the second waits, then reuses what the first finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.errors import UserInputError
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.passes.base import Context, Pass
from squeeze.passes.registry import pass_class, pass_names

DONE = "done.json"
CACHE_LAYOUT = 4  # bump when the entry format changes: old entries then simply miss


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


class CacheEntryInvalid(Exception):
    """A cache entry that cannot be trusted: unreadable, incomplete, or its files changed."""


@contextlib.contextmanager
def entry_lock(entry: Path, progress=lambda m: None):
    """Hold an exclusive lock on a cache entry; a second run waits here (and says so) until the first is done."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another squeeze run that is working in {entry}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def verified_file(entry: Path, rel: Any, sha256: Any) -> Path:
    """The file `rel` (relative to the entry) if it exists and still has the recorded sha256."""
    if not isinstance(rel, str) or not isinstance(sha256, str) or len(sha256) != 64:
        raise CacheEntryInvalid("its record names no file and hash")
    path = (entry / rel).resolve()
    if not path.is_file():
        raise CacheEntryInvalid(f"{rel} is missing")
    if sha256_file(path) != sha256:
        raise CacheEntryInvalid(f"{path.name} does not match the sha256 recorded when it was written")
    return path


def read_json_record(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CacheEntryInvalid(f"{path.name} is unreadable ({type(exc).__name__})") from None
    if not isinstance(record, dict) or any(k not in record for k in required):
        raise CacheEntryInvalid(f"{path.name} lacks {', '.join(k for k in required if not isinstance(record, dict) or k not in record)}")
    return record


def discard_entry(entry: Path, reason: Exception, progress=lambda m: None) -> None:
    progress(f"cache entry {entry} is damaged ({reason}); discarding it and recomputing")
    shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class RunFacts:
    """What a run has, for the passes' declared needs (squeeze.passes.base.Requires)."""

    has_data: bool
    has_labels: bool
    logits: bool  # the model outputs (N, classes)
    student_given: bool  # --student: the first artifact is a student, not the teacher
    model: str = "the model"
    output: str = ""  # its per-sample output shape (and what it is), for messages


def check_plan(steps: list[Step], facts: RunFacts, ctx: Context, first: Any = None) -> None:
    """Every pass's declared needs against what this run has, then the pass's own check(): all before any work
    (and the first pass's check_input() of `first`, the model it will receive). Pass order and artifact types
    were checked when the recipe was made."""
    is_student = facts.student_given
    for step in steps:
        p, need = step.pass_, step.pass_.requires
        if not isinstance(step.config, p.Config):
            raise UserInputError(f"pass {p.name!r} needs a {p.Config.__name__} config")
        if need.data and not facts.has_data:
            raise UserInputError(f"pass {p.name!r} needs data: pass --data")
        if need.labels and not facts.has_labels:
            raise UserInputError(f"pass {p.name!r} needs labelled data")
        if need.logits and not facts.logits:
            raise UserInputError(f"pass {p.name!r} needs a model that outputs class logits (N, classes); {facts.model} outputs "
                                 f"N x {facts.output}. Drop it from the recipe (the built-in recipes do), "
                                 "or use --recipe export to export and profile the model")
        if p.chooses_student and facts.student_given:
            raise UserInputError(f"--student and a {p.name!r} pass both choose the student; drop one")
        if need.student and not is_student:
            choosers = [n for n in pass_names() if pass_class(n).chooses_student]
            raise UserInputError(f"pass {p.name!r} trains a student but none is given: add a {' or '.join(repr(c) for c in choosers)} "
                                 f"pass before it, or pass --student")
        is_student = is_student or p.chooses_student
        p.check(step.config, ctx)
    if steps and first is not None:
        steps[0].pass_.check_input(steps[0].config, first)


def module_digest(module: torch.nn.Module, extra: Any = None) -> str:
    """A content hash of a module's weights and buffers (and `extra`, e.g. its architecture spec)."""
    from squeeze.io.onnx_export import tensor_bytes

    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def artifact_hash(art: Any) -> str:
    if getattr(art, "sha256", ""):
        return art.sha256
    if isinstance(art, ModelArtifact):
        return module_digest(art.module, {"arch": art.metadata.get("arch"), "kwargs": art.metadata.get("arch_kwargs")})
    raise TypeError(f"cannot hash a {type(art).__name__}")


def versions_key() -> dict[str, str]:
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
        "channel_multiple": getattr(ctx.target, "channel_multiple", 1),  # search and prune align widths to it
        "device": ctx.device,
        "versions": versions_key(),
    }
    output = ctx.teacher.metadata.get("output") if ctx.teacher is not None else None
    if output is not None:  # --output picks one of the model's outputs: not part of the file's hash
        material["output"] = output
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def artifact_record(art: Any, entry: Path) -> tuple[dict[str, Any], Any]:
    """What done.json needs to bring the artifact back: its file inside the entry, and its descriptors.

    A model that is not yet a file (e.g. search's untrained student) is saved as a squeeze
    checkpoint first, and the artifact returned carries that file's hash: the next pass's key is
    then the same whether this pass just ran or was loaded from the cache.
    """
    if isinstance(art, ModelArtifact) and art.format != "checkpoint":
        from squeeze.io.fsutil import sha256_file
        from squeeze.io.modelio import save_checkpoint

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


def load_artifact(entry: Path, record: Any) -> Any:
    """The artifact a done.json record describes, after checking its file against the recorded sha256."""
    from squeeze.io.modelio import load_model

    if not isinstance(record, dict) or record.get("kind") not in ("onnx", "model"):
        raise CacheEntryInvalid("its artifact record is malformed")
    path = verified_file(entry, record.get("path"), record.get("sha256"))
    try:
        if record["kind"] == "onnx":
            return OnnxArtifact(path, record["sha256"], int(record["opset"]), InputSpec.from_dict(record["input_spec"]),
                                record.get("producer", ""), record.get("parity"), record.get("provenance", []))
        art = load_model(path)
    except (KeyError, TypeError, ValueError, UserInputError) as exc:
        raise CacheEntryInvalid(f"its artifact cannot be loaded ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    art.metadata = {**art.metadata, **(record.get("metadata") or {})}
    art.provenance = record.get("provenance", [])
    return art


def _reuse(entry: Path, name: str, ctx: Context) -> tuple[Any, dict[str, Any]] | None:
    """A finished, verified entry's artifact and done.json, or None (a damaged entry is discarded)."""
    done = entry / DONE
    if not done.exists():
        return None
    try:
        saved = read_json_record(done, ("artifact", "seconds", "result"))
        return load_artifact(entry, saved["artifact"]), saved
    except CacheEntryInvalid as exc:
        discard_entry(entry, exc, ctx.progress)
        return None


def run(steps: list[Step], ctx: Context, artifact: Any, cache: PassCache | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Run checked steps in order (check_plan first); each through the cache when there is one."""
    if steps and not isinstance(artifact, steps[0].pass_.input_kind):
        raise UserInputError(f"pass {steps[0].pass_.name!r} takes a {steps[0].pass_.input_kind.__name__}, not a {type(artifact).__name__}")
    records = []
    input_hash = artifact_hash(artifact) if cache is not None else ""
    plan = getattr(ctx.progress, "plan", None)
    if plan is not None:
        plan({step.pass_.name: step.pass_.planned_work(step.config, ctx) for step in steps})
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
        else:
            key = step_key(step, ctx, input_hash)
            artifact, outcome = _run_cached(step, ctx, artifact, cache.entry(name, key), key, cache.resume, start)
            records.append({**record, **outcome})
            input_hash = artifact_hash(artifact)
        ctx.artifacts[name] = artifact
        finished(name, records[-1]["seconds"], records[-1].get("cached", False))
    return artifact, records


def _run_cached(step: Step, ctx: Context, artifact: Any, entry: Path, key: str, resume: bool, start: float) -> tuple[Any, dict[str, Any]]:
    name = step.pass_.name
    with entry_lock(entry, ctx.progress):
        if entry.exists() and not resume:
            shutil.rmtree(entry)
        reused = _reuse(entry, name, ctx)
        if reused is not None:
            artifact, saved = reused
            ctx.results[name] = saved["result"]
            ctx.progress(f"{name}: finished earlier, reusing {entry}")
            return artifact, {"seconds": saved["seconds"], "cached": True, "cache_entry": str(entry)}
        resuming = entry.exists()
        entry.mkdir(parents=True, exist_ok=True)
        if resuming:
            ctx.progress(f"{name}: resuming the unfinished run in {entry}")
        artifact = step.pass_.run(dataclasses.replace(ctx, run_dir=entry), artifact, step.config)
        seconds = round(time.perf_counter() - start, 3)
        record_of_output, artifact = artifact_record(artifact, entry)
        write_json_atomic(entry / DONE, json.loads(json.dumps({"pass": name, "key": key, "seconds": seconds, "artifact": record_of_output,
                                                               "result": ctx.results.get(name)}, default=str)))
        return artifact, {"seconds": seconds, "cached": False, "resumed": resuming, "cache_entry": str(entry)}


def _plain(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
