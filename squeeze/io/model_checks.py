"""Checks a loaded model must pass before any work: finite weights, and an input shape whose
forward pass fits in memory (estimated with fake tensors, so nothing is allocated)."""

from __future__ import annotations

from pathlib import Path

import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.errors import UserInputError


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def activation_estimate(module: torch.nn.Module, spec: InputSpec) -> int:
    """Bytes of the largest tensor one forward pass makes, traced with fake tensors (nothing is allocated)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.peak = max(Largest.peak, t.numel() * t.element_size())
            return out

    with FakeTensorMode(allow_non_fake_inputs=True), Largest(), torch.no_grad():
        module(torch.empty(spec.shape, dtype=getattr(torch, spec.dtype)))
    return Largest.peak


_ESTIMATES: dict[tuple[str, str, tuple[int, ...], str], int] = {}  # (file sha256, architecture, input shape, dtype) -> bytes


def check_memory(art: ModelArtifact) -> None:
    """An input shape whose forward pass cannot fit in memory is refused with the estimate, before it is tried
    (the process would otherwise be killed). SQUEEZE_ALLOW_LARGE_INPUT=1 forces the attempt."""
    import math
    import os

    spec = art.input_spec
    input_bytes = math.prod(spec.shape) * torch.empty((), dtype=getattr(torch, spec.dtype)).element_size()
    available = _available_memory()
    if os.environ.get("SQUEEZE_ALLOW_LARGE_INPUT") == "1":
        return
    estimate = input_bytes
    # a file loaded again in this process (same architecture and input): its trace (~0.5 s) is known
    key = (art.sha256, repr((art.metadata.get("arch"), art.metadata.get("arch_kwargs"))), tuple(spec.shape), spec.dtype)
    if key in _ESTIMATES:
        estimate = _ESTIMATES[key]
    elif input_bytes < available // 2 and not isinstance(art.module, torch.jit.ScriptModule):
        try:
            estimate = max(input_bytes, 2 * activation_estimate(art.module, spec))
            if art.sha256:
                _ESTIMATES[key] = estimate
        except Exception:  # a model fake tensors cannot trace: the real forward check follows
            pass
    if estimate > available // 2:
        shape = "x".join(map(str, spec.shape))
        raise UserInputError(f"input shape {shape} needs about {estimate / 2**30:.1f} GiB for one forward pass of {art.source}, "
                             f"more than half of the {available / 2**30:.1f} GiB available; use a smaller --input-shape "
                             "(or set SQUEEZE_ALLOW_LARGE_INPUT=1 to try anyway)")


def check_finite_weights(art: ModelArtifact) -> None:
    """NaN/Inf weights are a broken model, reported as such (not later as a failed parity check)."""
    for name, tensor in art.module.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserInputError(f"{art.source}: weights {name} hold {bad} NaN/Inf values of {tensor.numel()}; the model is broken")
