"""The pass cache never ships what it did not make: every reused file is checked against the
sha256 recorded when it was written; a tampered, truncated or unreadable entry is reported in one
line, discarded and recomputed; two runs never train in the same entry at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from squeeze import api, zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ROOT / "samples" / "students" / "tiny_cnn16.json"
RECIPE = "version: 1\npasses:\n  - distill: {epochs: 1}\n  - export\n  - profile: {spec: {iterations: 5, warmup: 2}}\n"
DIGITS_SPEC = InputSpec((1, 1, 8, 8), normalization={"mean": [0.3053], "std": [0.376]})


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(zoo.tiny_cnn(1, 10, width=8).eval(), teacher, arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 8},
                    input_spec=DIGITS_SPEC, metadata={"dataset": "digits", "split": {"seed": 0}})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    return teacher, recipe, tmp_path / "cache"


def compress(setup, out: Path) -> tuple[dict, list[str]]:
    teacher, recipe, cache = setup
    messages: list[str] = []
    result = api.compress(teacher, student=str(STUDENT), recipe=recipe, data="digits", cache_dir=cache, out=out, progress=messages.append)
    return result, messages


def entry(cache: Path, name: str) -> Path:
    found = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(f"{name}-")]
    assert len(found) == 1, found
    return found[0]


def cached(result: dict, name: str) -> bool:
    return next(p for p in result["passes"] if p["name"] == name)["cached"]


def swap_head_rows(path: Path) -> None:
    """The attack from the issue: swap rows of the classifier, so the model is confidently wrong."""
    model = onnx.load(str(path))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    init = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight[[0, 1, 2, 3]] = weight[[3, 2, 1, 0]]
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(model, str(path))


def test_every_kind_of_damage_is_detected_discarded_and_recomputed(setup, tmp_path):
    cache = setup[2]
    first, _ = compress(setup, tmp_path / "out0")
    reference = (first["outputs"]["model.onnx"]["sha256"], first["accuracy"])

    def damage_then_rerun(i: int, what: str, apply) -> tuple[dict, list[str]]:
        apply()
        result, messages = compress(setup, tmp_path / f"out{i}")
        assert any("is damaged" in m or "discarding unreadable" in m for m in messages), (what, messages)
        assert (result["outputs"]["model.onnx"]["sha256"], result["accuracy"]) == reference, what  # the same model ships
        return result, messages

    export = entry(cache, "export")
    result, messages = damage_then_rerun(1, "tampered ONNX", lambda: swap_head_rows(export / "model.onnx"))
    assert any(f"cache entry {export} is damaged" in m and "does not match the sha256" in m for m in messages)
    assert not cached(result, "export") and cached(result, "distill")  # the intact entry is still reused

    distill = entry(cache, "distill")
    done = distill / "done.json"
    result, _ = damage_then_rerun(2, "truncated done.json", lambda: done.write_text(done.read_text()[:40]))
    assert not cached(result, "distill")

    checkpoint = distill / json.loads(done.read_text())["artifact"]["path"]
    result, _ = damage_then_rerun(3, "truncated checkpoint", lambda: checkpoint.write_bytes(checkpoint.read_bytes()[:100]))
    assert not cached(result, "distill")

    teacher_onnx = entry(cache, "teacher") / "teacher.onnx"
    damage_then_rerun(4, "garbage teacher.onnx", lambda: teacher_onnx.write_bytes(b"\x08\x07 not an ONNX model"))

    def corrupt_training_state():  # what a killed run leaves, corrupted: no done.json, a broken per-epoch state
        for f in [p for p in distill.rglob("*") if p.is_file()]:
            f.unlink()
        (distill / "distill" / "resume-state.pt").write_bytes(b"PK\x03\x04 not a zip")

    _, messages = damage_then_rerun(5, "broken training state", corrupt_training_state)
    assert any("discarding unreadable training state" in m for m in messages)


def test_two_concurrent_runs_never_train_in_the_same_entry(setup, tmp_path):
    teacher, recipe, cache = setup

    def start(out: Path) -> subprocess.Popen:
        argv = [sys.executable, "-m", "squeeze", "compress", str(teacher), "--student", str(STUDENT), "--recipe", str(recipe),
                "--data", "digits", "--cache-dir", str(cache), "--out", str(out), "--threads", "1"]  # pinned: no settings tuning
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [start(o) for o in outs]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for e in errs]
    manifests = [json.loads((o / "manifest.json").read_text()) for o in outs]
    assert sorted(cached(m, "distill") for m in manifests) == [False, True]  # one trained; the other waited, then reused
    assert any("waiting for another squeeze run" in e for e in errs)
