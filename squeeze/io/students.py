"""Student architecture specs: a JSON file {"arch": "pkg.mod:factory", "kwargs": {...}} (what
`squeeze search` writes) or a bare `pkg.mod:factory`. Channels and classes come from the teacher."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn

from squeeze.io.data import import_object
from squeeze.errors import UserInputError
from squeeze.io.modelio import TRUSTED_ARCH_PREFIX


def load_student_spec(spec: str) -> tuple[str, dict[str, Any]]:
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise UserInputError(f"student spec not found: {path}")
        try:
            data = json.loads(path.read_text())
            arch, kwargs = str(data["arch"]), dict(data.get("kwargs") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"student spec {path} must be JSON like {{\"arch\": \"pkg.mod:factory\", \"kwargs\": {{}}}} ({exc})") from None
        if not arch.startswith(TRUSTED_ARCH_PREFIX):
            raise UserInputError(f"student spec {path} names {arch!r}; pass --student {arch} to confirm you trust that code")
        return arch, kwargs
    if ":" not in spec:
        raise UserInputError(f"--student must be a JSON spec file or pkg.mod:factory, got {spec!r}")
    return spec, {}


def build_student(arch: str, kwargs: dict[str, Any], in_channels: int, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """Build the student; fills in_channels / num_classes from the teacher where the factory takes them."""
    factory = import_object(arch, "--student")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(kwargs)
    if "in_channels" in params:
        kwargs.setdefault("in_channels", in_channels)
    if "num_classes" in params:
        kwargs.setdefault("num_classes", num_classes)
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise UserInputError(f"student {arch} failed to build with {kwargs}: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise UserInputError(f"student {arch} returned a {type(module).__name__}, not an nn.Module")
    return module, kwargs


def initial_student(spec: str, teacher: Any, seed: int) -> tuple[Any, str, dict[str, Any]]:
    """The student named by `spec`, freshly initialised from `seed`, shaped for the teacher's input and classes."""
    import torch

    arch, kwargs = load_student_spec(spec)
    with torch.no_grad():
        num_classes = int(teacher.module(teacher.input_spec.example(batch=2)).shape[-1])
    torch.manual_seed(seed)
    module, kwargs = build_student(arch, kwargs, teacher.input_spec.shape[1], num_classes)
    return module, arch, kwargs
