"""Engine manifests: what an engine was built with (TensorRT version, GPU/SM, JetPack, power mode, precision,
shapes, ONNX sha256), written beside it, and the refusal to run it anywhere else."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.io.artifacts import InputSpec, OnnxArtifact
from squeeze.errors import UserInputError
from squeeze.io.fsutil import sha256_file

from squeeze.targets.trtexec import MANIFEST_FORMAT, EngineBuildOptions, EngineMismatchError, profile_shapes


# ----------------------------------------------------------------------------------------------
# Engine manifests


def manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".manifest.json")


def read_manifest(engine: Path) -> dict[str, Any]:
    path = manifest_path(engine)
    if not path.is_file():
        raise EngineMismatchError(f"{engine} has no manifest ({path.name}): squeeze cannot tell which TensorRT version and GPU "
                                  "built it, and engines only run where they were built. Rebuild it with squeeze build")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineMismatchError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise EngineMismatchError(f"{path} is not a squeeze engine manifest")
    if manifest.get("engine_sha256") != sha256_file(engine):
        raise EngineMismatchError(f"{engine} does not match its manifest (sha256 differs): it was changed after the build; rebuild it")
    return manifest


ENGINE_FACTS = ("tensorrt_version", "gpu", "sm", "module", "jetpack", "power_mode")


def engine_mismatches(manifest: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What differs between where the engine was built and where it would run (facts known on both sides only)."""
    out = []
    for key in ENGINE_FACTS:
        built, now = manifest.get(key), here.get(key)
        if isinstance(built, dict):
            built = built.get("name")
        if isinstance(now, dict):
            now = now.get("name")
        if built not in (None, "") and now not in (None, "") and str(built) != str(now):
            out.append(f"{key.replace('_', ' ')} {built} -> {now}")
    return out


def refuse_mismatch(engine: Path, manifest: dict[str, Any], here: dict[str, Any], rebuild: str) -> None:
    diffs = engine_mismatches(manifest, here)
    if diffs:
        raise EngineMismatchError(
            f"refusing to load {engine.name}: it was built for a different target ({'; '.join(diffs)}). A TensorRT engine only runs "
            f"on the TensorRT version and GPU that built it. Rebuild: {rebuild}")


def engine_input_spec(manifest: dict[str, Any], engine: Path, batch: int) -> InputSpec:
    """The engine's input as recorded at build time; refuses a batch outside its optimization profile."""
    shapes = manifest["input"]["shapes"]
    spec = InputSpec(tuple(shapes.get("static") or shapes["opt"]), manifest["input"]["name"], manifest["input"]["dtype"], "static" not in shapes)
    top = shapes["static"][0] if "static" in shapes else shapes["max"][0]
    if (not spec.dynamic_batch and batch != top) or batch > top:
        raise UserInputError(f"{engine.name} was built for batch {'' if 'static' in shapes else 'up to '}{top}; rebuild it "
                             f"(squeeze build --batch-size {batch}) to time batch {batch}")
    return spec


def new_manifest(engine: Path, onnx: OnnxArtifact, facts: dict[str, Any], target: str, options: EngineBuildOptions,
                 batch: int, build_command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "engine": engine.name,
        "engine_sha256": sha256_file(engine),
        "engine_bytes": engine.stat().st_size,
        "onnx": str(onnx.path),
        "onnx_sha256": onnx.sha256,
        "target": target,
        "tensorrt_version": facts.get("tensorrt_version"),
        "gpu": facts.get("gpu"),
        "sm": facts.get("sm"),
        "module": facts.get("module"),
        "jetpack": facts.get("jetpack"),
        "l4t": facts.get("l4t"),
        "power_mode": facts.get("power_mode"),
        "precision": options.precision,
        "build_options": asdict(options),
        "input": {"name": onnx.input_spec.name, "dtype": onnx.input_spec.dtype,
                  "shapes": profile_shapes(onnx.input_spec, batch, options.max_batch) or {"static": list(onnx.input_spec.shape)}},
        "build_command": build_command,
        "built_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "squeeze_version": __version__,
        **(extra or {}),
    }
