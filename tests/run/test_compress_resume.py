"""Pass cache: re-runs skip finished passes; kill -9 mid-pass resumes there and ends identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squeeze import api
from squeeze.io.fsutil import sha256_file
from squeeze.measure.latency import SPEEDUP_FIELDS
from squeeze.targets.base import ProfileSpec

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"
STUDENT = ROOT / "samples" / "students" / "tiny_cnn16.json"
FAST = ProfileSpec(warmup=2, iterations=20)


def _compress_cmd(out: Path, cache: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "squeeze", "compress", str(TEACHER), "--recipe", "distill", "--student", str(STUDENT), "--epochs", str(epochs),
            "--out", str(out), "--cache-dir", str(cache), "-n", "20", "--threads", "1", "--json"]  # pinned: no settings tuning to time


def _run_until(cmd: list[str], ready, timeout: float = 300) -> None:
    """Start the real CLI, wait until `ready()` holds, then SIGKILL it (no cleanup handlers run)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"compress finished (exit {proc.returncode}) before it could be killed")
            if time.monotonic() > deadline:
                pytest.fail("compress never reached the point to kill it")
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_9_during_passes_resumes_and_matches_an_uninterrupted_run(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = _compress_cmd(out, cache, epochs=3)
    # 1) killed in the middle of distillation, once its first epoch checkpoint exists
    _run_until(cmd, lambda: any(cache.glob("distill-*/distill/resume-state.pt")))
    assert not out.exists() and not any((cache).glob("distill-*/done.json"))
    # 2) killed after distillation finished, while exporting / profiling
    _run_until(cmd, lambda: any(cache.glob("distill-*/done.json")))
    assert not out.exists()
    # 3) runs to the end
    finished = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    assert [(p["name"], p["cached"]) for p in resumed["passes"]] == [("distill", True), ("export", False), ("profile", False)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # killed runs' staging directories were cleaned up

    # The same run, never interrupted, in a fresh cache: the same student, bit for bit.
    clean = subprocess.run(_compress_cmd(tmp_path / "clean", tmp_path / "cache2", epochs=3), capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr
    uninterrupted = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert resumed["outputs"]["model.onnx"]["sha256"] == uninterrupted["outputs"]["model.onnx"]["sha256"]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    assert sha256_file(out / "distill" / "student.pt") == sha256_file(tmp_path / "clean" / "distill" / "student.pt")


def test_rerun_reuses_finished_passes_and_no_resume_recomputes(tmp_path):
    kwargs = dict(recipe="distill", student=str(STUDENT), distill_options={"epochs": 1}, profile_spec=FAST, cache_dir=tmp_path / "cache")
    first = api.compress(TEACHER, out=tmp_path / "a", **kwargs)
    assert [p["cached"] for p in first["passes"]] == [False, False, False]
    again = api.compress(TEACHER, out=tmp_path / "b", **kwargs)
    assert [p["cached"] for p in again["passes"]] == [True, True, True]
    assert again["outputs"]["model.onnx"]["sha256"] == first["outputs"]["model.onnx"]["sha256"]
    # Accuracy, parity and size are reused from the cache; latency is re-timed with all stages interleaved.
    without_latency = lambda stage: {k: v for k, v in stage.items() if k not in ("latency", "cached", *SPEEDUP_FIELDS)}
    assert without_latency(again["stages"][1]) == without_latency(first["stages"][1]) and again["stages"][1]["cached"]
    assert again["stages"][1]["latency"]["measured"] and again["stages"][1]["latency"]["p50_ms"] > 0
    changed = api.compress(TEACHER, out=tmp_path / "c", **{**kwargs, "distill_options": {"epochs": 1, "temperature": 2.0}})
    assert [p["cached"] for p in changed["passes"]] == [False, False, False]  # a different config is a different key
    fresh = api.compress(TEACHER, out=tmp_path / "d", resume=False, **kwargs)
    assert [p["cached"] for p in fresh["passes"]] == [False, False, False]
    assert fresh["outputs"]["model.onnx"]["sha256"] == first["outputs"]["model.onnx"]["sha256"]  # seeded: same result


def test_a_cached_teacher_latency_taken_on_a_noisy_host_is_measured_again(tmp_path):
    """The derived budget comes from the teacher's cached latency; one recorded as noisy (inflated) is not reused
    for good: the next run measures it again and keeps the better figure (issue 16). A run that derives no budget
    takes no such measurement, and the first run that needs one adds it to the cached teacher."""
    cache = tmp_path / "cache"
    api.compress(TEACHER, out=tmp_path / "export", recipe="export", profile_spec=FAST, cache_dir=cache)
    (row_file,) = cache.glob("teacher-*/stage.json")
    assert json.loads(row_file.read_text())["budget_latency"] is None
    recipe = tmp_path / "prune.yaml"  # a pass that aims at a latency, with no budget given: the budget is derived
    recipe.write_text(json.dumps({"version": 1, "passes": [{"prune": {"plan": ["width:0.25"], "recover_epochs": 0, "final_epochs": 0,
                                                                      "profile_rounds": 1, "final_rounds": 1, "channel_multiple": 8,
                                                                      "profile_iterations": 20, "final_iterations": 20, "exporter": "legacy"}},
                                                           "export", "profile"]}))
    kwargs = dict(recipe=str(recipe), profile_spec=FAST, cache_dir=cache)
    api.compress(TEACHER, out=tmp_path / "a", **kwargs)
    record = json.loads(row_file.read_text())
    quiet_p50 = record["budget_latency"]["p50_ms"]
    record["budget_latency"].update(p50_ms=50 * quiet_p50, noisy=True, why_noisy=["host oversubscribed (a test's stand-in)"])
    row_file.write_text(json.dumps(record))
    messages: list[str] = []
    api.compress(TEACHER, out=tmp_path / "b", progress=messages.append, **kwargs)
    assert any("cached latency was measured on a noisy host; measuring it again" in m for m in messages)
    assert json.loads(row_file.read_text())["budget_latency"]["p50_ms"] < 10 * quiet_p50  # the inflated figure is gone
    messages.clear()
    before = json.loads(row_file.read_text())["budget_latency"]
    api.compress(TEACHER, out=tmp_path / "c", progress=messages.append, **kwargs)
    assert any("measuring it again" in m for m in messages) == bool(before["noisy"])  # a quiet figure is reused as it is


def test_ctrl_c_says_that_re_running_resumes(tmp_path):
    """Ctrl-C (SIGINT to the foreground group) mid-distillation: exit 130, one line saying a re-run resumes, no traceback."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [c for c in _compress_cmd(out, cache, epochs=3) if c != "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(cache.glob("distill-*/distill/resume-state.pt")):
        assert proc.poll() is None, f"compress finished (exit {proc.returncode}) before the interrupt"
        assert time.monotonic() < deadline, "compress never reached distillation"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; re-running the same command resumes from the last finished step" in stderr
    assert "Traceback" not in stderr and not out.exists()
