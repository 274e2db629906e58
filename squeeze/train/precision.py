"""Mixed precision for training on the CPU: bf16 autocast where the CPU computes bf16 natively.

On a CPU with AMX or AVX512-BF16, oneDNN runs bf16 convolutions and matmuls at about twice the fp32 rate
(bench/kd_throughput.py: 2.0-2.4x the images/s of a CIFAR distillation step on 2 cores here); on CPUs without
them bf16 is emulated and slower, so `auto` stays fp32 there. Weights, optimizer state, losses and every
evaluation stay fp32: only the forward (and so the backward) of the student and the teacher run in bf16.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from squeeze.errors import UserInputError

PRECISIONS = ("auto", "fp32", "bf16")
_NATIVE_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (read from /proc/cpuinfo's flags; elsewhere: no)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "").split()
    except OSError:
        return False
    if not any(flag in flags for flag in _NATIVE_FLAGS):
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise UserInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def resolve_precision(name: str, device: str) -> str:
    """What a training run uses: 'bf16' or 'fp32' on the CPU ('auto' picks bf16 only on native hardware);
    on CUDA, 'fp16' (the GradScaler'd mixed precision) unless fp32 is asked for."""
    check_precision(name)
    if device.startswith("cuda"):
        return "fp32" if name == "fp32" else "fp16"
    if name == "bf16" and not native_bf16():
        raise UserInputError("precision bf16 needs a CPU with AMX or AVX512-BF16 (this one would emulate it, slower than fp32): use auto or fp32")
    return "bf16" if name == "bf16" or (name == "auto" and native_bf16()) else "fp32"


def autocast(resolved: str):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if resolved == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if resolved == "fp16":
        return torch.autocast("cuda")
    return contextlib.nullcontext()
