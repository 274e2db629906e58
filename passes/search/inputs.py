"""The search's inputs: the teacher's class count, the one fixed proxy batch, the teacher's side of the proxy,
and the per-candidate seed (a score depends on the architecture and the seed, not on when it was evaluated)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import torch

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.measure.analysis import evaluating
from squeeze.passes.search import proxies


def candidate_seed(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:8], 16)


def teacher_classes(teacher: ModelArtifact, proxy: str) -> int:
    """Number of classes from the teacher's logits; a clear error when its output is not [B, C]."""
    with torch.no_grad(), evaluating(teacher.module):
        out = teacher.module(teacher.input_spec.example(batch=2))
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] >= 2:
        return int(out.shape[1])
    shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    needing = ", ".join(proxies.NEEDS_LOGITS)
    if proxy in proxies.NEEDS_LOGITS:
        raise UserInputError(f"the teacher's output is {shape}, not class logits [B, C]; proxy {proxy} needs logits "
                             f"(proxies that need logits: {needing})")
    raise UserInputError(f"the teacher's output is {shape}, not class logits [B, C]: search builds classifier students "
                         f"(proxies that need logits: {needing})")


def fixed_batch(data: DataBundle, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch from `split`, class-balanced (round robin over classes) when labelled."""
    dataset = data.train if split == "train" else data.calibration
    if len(dataset) < 2:
        raise UserInputError(f"the {split} split of {data.name} has {len(dataset)} samples; the proxy batch needs at least 2")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    if data.has_labels:
        by_class: dict[int, list[int]] = {}
        for i in order:
            by_class.setdefault(int(dataset[i][1]), []).append(i)
        queues = [by_class[c] for c in sorted(by_class)]
        picked: list[int] = []
        while len(picked) < min(n, len(order)):
            for q in queues:
                if q and len(picked) < n:
                    picked.append(q.pop(0))
        order = picked
    xs, ys = zip(*(dataset[i] for i in order[:n]))
    return torch.stack(xs).float(), torch.as_tensor(ys, dtype=torch.long)


def proxy_inputs(teacher: ModelArtifact, data: DataBundle | None, cfg: Any, num_classes: int, input_shape: tuple[int, ...],
                  timings: dict[str, float], progress: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """The one fixed proxy batch (calibration split, never eval) and the teacher's side of the proxy, computed once."""
    batch_info: dict[str, Any] = {"size": 0}
    x = y = None
    if cfg.proxy in proxies.NEEDS_DATA:
        if data is None:
            raise UserInputError(f"proxy {cfg.proxy} needs data: pass --data (a calibration or train split is read, never eval)")
        if tuple(data.sample_shape) != tuple(teacher.input_spec.shape[1:]):
            raise UserInputError(f"dataset {data.name} samples have shape {list(data.sample_shape)}, the teacher takes {list(teacher.input_spec.shape[1:])}")
        x, y = fixed_batch(data, cfg.proxy_split, cfg.batch_size, cfg.seed)
        label_source = "labels"
        if not data.has_labels:
            with torch.no_grad(), evaluating(teacher.module):
                y = teacher.module(x).argmax(1)
            label_source = "teacher predictions (the data is unlabelled)"
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise UserInputError(f"labels must be in [0, {num_classes}) for a {num_classes}-class teacher; found {int(y.min())}..{int(y.max())}")
        batch_info = {"split": cfg.proxy_split, "size": int(len(x)), "seed": cfg.seed, "labels": label_source,
                      "classes_present": int(len(torch.unique(y)))}
    reference = None
    if cfg.proxy in proxies.NEEDS_TEACHER:
        t0 = time.perf_counter()
        progress(f"computing the teacher's reference on {len(x)} {cfg.proxy_split} images ({cfg.teacher_init} teacher)")
        reference = proxies.teacher_reference(teacher.module, x, y, cfg.teacher_init, cfg.seed, cfg.temperature)
        timings["teacher_reference_s"] = time.perf_counter() - t0
    return proxies.ProxyInputs(x, y, input_shape, reference), batch_info
