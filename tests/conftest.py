"""Shared fixtures: tiny models saved in every accepted format, and a CLI runner."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import tempfile
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from squeeze import zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint, save_exported_program, save_torchscript
from ssh_fixtures import _private_calibration_store, flaky_proxy, sshd, tiny_onnx_path  # noqa: F401  (a real sshd on loopback for the remote targets)

# compress caches pass outputs by content; tests (and the CLI subprocesses they start) share one
# throw-away cache instead of the user's ~/.cache.
os.environ.setdefault("SQUEEZE_CACHE_DIR", tempfile.mkdtemp(prefix="squeeze-test-cache-"))

ROOT = Path(__file__).resolve().parent.parent
TEACHERS = ROOT / "samples" / "teachers"
MNIST_SPEC = InputSpec((1, 1, 28, 28), normalization={"mean": [0.1307], "std": [0.3081]})


@dataclass
class TinyFiles:
    module: torch.nn.Module
    checkpoint: Path
    pt2: Path
    torchscript: Path
    state_dict: Path
    pickle: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyFiles:
    """A tiny CNN for 1x28x28 inputs, with non-trivial BatchNorm statistics, saved five ways."""
    torch.manual_seed(0)
    module = zoo.tiny_cnn()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    module.eval()
    d = tmp_path_factory.mktemp("tiny")
    meta = {"dataset": "mnist", "split": {"seed": 0}}
    save_checkpoint(module, d / "tiny.pt", arch="squeeze.zoo:tiny_cnn", arch_kwargs={}, input_spec=MNIST_SPEC, metadata=meta)
    save_exported_program(module, d / "tiny.pt2", MNIST_SPEC, metadata=meta)
    save_torchscript(module, d / "tiny.ts", MNIST_SPEC)
    torch.save(module.state_dict(), d / "tiny_state.pt")
    torch.save(module, d / "tiny_pickle.pt")
    return TinyFiles(module, d / "tiny.pt", d / "tiny.pt2", d / "tiny.ts", d / "tiny_state.pt", d / "tiny_pickle.pt")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """Run the `squeeze` app in this process: the same click app, exit code and stdout/stderr streams a user gets
    from the console script, without a fresh interpreter's 2-3 s of imports and first exports per call (about a
    hundred calls in the suite). What needs a process of its own (a kill, Ctrl-C, the installed script, start-up
    cost) uses `run_cli_process`."""
    import squeeze.cli  # noqa: F401  (registers the commands)
    cli_app = importlib.import_module("squeeze.cli.app")

    out, err = io.StringIO(), io.StringIO()
    debug = cli_app._state["debug"]
    code: int = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or os.getcwd()):
        try:
            cli_app.app(args=[str(a) for a in args], prog_name="squeeze")
        except SystemExit as exc:  # click's standalone mode always ends in one
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            cli_app._state["debug"] = debug  # --debug is per invocation
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, cwd: Path | None = None) -> CliResult:
    """Run the real console entry point in a subprocess (a fresh interpreter, as a user starts it)."""
    proc = subprocess.run([sys.executable, "-m", "squeeze", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli
