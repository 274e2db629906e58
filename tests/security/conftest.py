"""Shared checks of the hostile-input tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostile.py


def assert_refused(result, fragment: str, *, code: int = 2, sentinel: Path | None = None, out: Path | None = None) -> str:
    """Exit `code`, exactly one `error:` line and it is the last line, no traceback, no sentinel, nothing at `out`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.code == code, (result.code, result.stderr[-2000:])
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    if sentinel is not None:
        assert not sentinel.exists(), f"the hostile input ran code: {sentinel} was created"
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return errors[0]


@pytest.fixture
def sentinel(tmp_path) -> Path:
    return tmp_path / "SENTINEL-code-ran"
