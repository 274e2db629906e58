"""File-system faults are the user's to fix, not internal errors: a read-only --out, a full disk
under --out or under the pass cache give exit 2 naming the path, leave nothing partial, and a
later run with space resumes. Real faults: small and read-only tmpfs mounts made by the test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import assert_refused

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"  # its ONNX is 2.8 MB: it cannot fit in 1 MB


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); these faults need root")


@pytest.fixture
def mounts(tmp_path):
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount(path, options)
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_read_only_out_is_refused_before_work(cli, mounts):
    readonly = mounts("ro", "ro,size=1m")
    out = readonly / "out"
    result = cli("compress", TEACHER, "--recipe", "export", "--out", out)
    assert_refused(result, f"cannot write {out}", out=out)
    assert "loading model" not in result.stderr


def test_full_disk_under_out_names_the_file_and_leaves_nothing(cli, mounts, tmp_path):
    small = mounts("small", "size=1m")
    out = small / "out"
    result = cli("compress", TEACHER, "--recipe", "export", "--out", out, "--iterations", "5", "--cache-dir", tmp_path / "cache")
    assert_refused(result, "cannot write", out=out)
    assert "No space left" in result.stderr or "no space left" in result.stderr
    assert _files(small) == []  # no staging directory or temporary file is left behind


def test_full_cache_disk_then_a_later_run_with_space_resumes(cli, mounts, tmp_path):
    cache = mounts("cache", "size=1m")
    out = tmp_path / "out"
    first = cli("compress", TEACHER, "--recipe", "export", "--out", out, "--iterations", "5", "--cache-dir", cache)
    message = assert_refused(first, "cannot write", out=out)
    assert str(cache) in message
    subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)
    second = cli("compress", TEACHER, "--recipe", "export", "--out", out, "--iterations", "5", "--cache-dir", cache, "--json")
    assert second.code == 0, second.stderr[-1500:]
    assert json.loads((out / "manifest.json").read_text())["parity"]["passed"]
