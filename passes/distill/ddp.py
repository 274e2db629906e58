"""Distillation as DistributedDataParallel over N local processes (gloo on CPU, NCCL on GPUs): the
distill pass runs this when its config says nproc > 1. The processes get the teacher, student and
data the pass was given (shared-memory tensors, no re-loading); rank 0 writes the outputs."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch

from squeeze.errors import SqueezeError


def _worker(rank: int, world: int, port: int, teacher: Any, student: torch.nn.Module, data: Any, cfg: Any, out_dir: str,
            arch: str, kwargs: dict[str, Any], show_progress: bool) -> None:
    import dataclasses

    import torch.distributed as dist

    from squeeze.passes.distill.train import distill
    from squeeze.targets.ort_runtime import usable_cores

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cfg.device.startswith("cuda"):
        torch.cuda.set_device(rank)
        cfg = dataclasses.replace(cfg, device=f"cuda:{rank}")
    dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, usable_cores() // world))
    try:
        progress = (lambda m: print(f"… {m}", file=sys.stderr, flush=True)) if show_progress and rank == 0 else (lambda m: None)
        distill(teacher, student, data, cfg, Path(out_dir), student_arch=arch, student_kwargs=kwargs, progress=progress)
    finally:
        dist.destroy_process_group()


def distill_distributed(teacher: Any, student: torch.nn.Module, data: Any, cfg: Any, out_dir: Path, *, student_arch: str,
                        student_kwargs: dict[str, Any] | None, show_progress: bool) -> dict[str, Any]:
    """Run distill() in cfg.nproc processes; returns rank 0's result (out_dir/result.json)."""
    import torch.multiprocessing as mp

    from squeeze.train.objective import check_student_fits as check_inputs, resolve_weights

    check_inputs(teacher, student, data)  # bad input fails here, in one process, before any worker starts
    resolve_weights(cfg, data.has_labels)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").unlink(missing_ok=True)
    try:
        mp.spawn(_worker, args=(cfg.nproc, port, teacher, student, data, cfg, str(out_dir), student_arch, student_kwargs or {}, show_progress),
                 nprocs=cfg.nproc, join=True)
    except mp.ProcessRaisedException as exc:
        last = [line for line in str(exc).splitlines() if line.strip()][-1]
        raise SqueezeError(f"distributed distillation failed in a worker: {last}") from None
    return json.loads((out_dir / "result.json").read_text())
