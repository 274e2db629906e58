"""passes/ and targets/ install as squeeze.passes / squeeze.targets, never as top-level modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_passes_and_targets_under_squeeze(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("squeeze-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "squeeze/passes/export.py" in names and "squeeze/targets/cpu.py" in names
    assert not [n for n in names if n.startswith(("passes/", "targets/"))]


def test_installed_package_maps_folders_and_adds_no_top_level_names(tmp_path):
    # Run outside the repo so the working directory on sys.path cannot hide a wrong mapping.
    code = (
        "import importlib.util, squeeze.passes, squeeze.targets; "
        "print(squeeze.passes.__file__); print(squeeze.targets.__file__); "
        "print(importlib.util.find_spec('passes'), importlib.util.find_spec('targets'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True).stdout.splitlines()
    assert Path(out[0]).parent.name == "passes" and Path(out[0]).name == "__init__.py"
    assert Path(out[1]).parent.name == "targets"
    assert out[2] == "None None"
