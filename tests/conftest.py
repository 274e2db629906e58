"""Shared fixtures: tiny models saved in every accepted format, and a CLI runner."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from squeeze import zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint, save_exported_program, save_torchscript
from cli_runner import run_cli
from ssh_fixtures import _private_calibration_store, flaky_proxy, sshd, tiny_onnx_path  # noqa: F401  (a real sshd on loopback for the remote targets)

# compress caches pass outputs by content; tests (and the CLI subprocesses they start) share one
# throw-away cache instead of the user's ~/.cache.
os.environ.setdefault("SQUEEZE_CACHE_DIR", tempfile.mkdtemp(prefix="squeeze-test-cache-"))


def pytest_configure(config):
    """Under `pytest -n N` (make test), each worker has a core of its own and one torch thread: two 2-thread
    torch processes on a 2-core host thrash each other, and a latency measurement then sees its own core
    (squeeze.targets.ort_runtime.usable_cores, the host-load sampler) as a pinned deployment would."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        torch.set_num_threads(1)


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


@pytest.fixture
def cli():
    return run_cli
