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


def test_editable_install_imports_from_repo():
    import importlib.util

    import squeeze.passes
    import squeeze.targets

    assert Path(squeeze.targets.__file__).parent == ROOT / "targets"
    assert Path(squeeze.passes.__file__).parent == ROOT / "passes"
    assert importlib.util.find_spec("targets") is None and importlib.util.find_spec("passes") is None
