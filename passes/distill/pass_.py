"""Distillation pass: train a student from the teacher (KD, DIST, FitNet hints, RKD, SP, CE).

The student is selected on the *calibration* split (held out from training) and reported on the
*eval* split, so the reported accuracy never saw model selection. Training state is saved after
every epoch (atomically) and a re-run with the same config resumes from it; each epoch reseeds
from (seed, epoch), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, replace
from typing import ClassVar

import torch

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.fsutil import sha256_file
from squeeze.passes.base import Context, PassBase, Requires
from squeeze.passes.distill.config import STATE_FILE, STUDENT_FILE, DistillConfig  # noqa: F401 - the pass's interface
from squeeze.passes.distill.train import check_inputs, distill  # noqa: F401
from squeeze.train.objective import RELATION_TERMS, evaluate, parse_loss, resolve_weights  # noqa: F401
from squeeze.train.precision import resolve_precision
from squeeze.train.trainer import TrainingDivergedError  # noqa: F401


class DistillPass(PassBase):
    name: ClassVar[str] = "distill"
    Config: ClassVar[type] = DistillConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = ModelArtifact
    requires: ClassVar[Requires] = Requires(data=True, logits=True, student=True, teacher=True)
    produces_stage: ClassVar[bool] = True

    def check(self, cfg: DistillConfig, ctx: Context) -> None:
        resolve_precision(cfg.precision, ctx.device or cfg.device)  # bf16 asked for on a CPU without it: refused before any work
        if ctx.data is not None:
            weights = resolve_weights(cfg, ctx.data.has_labels)
            script = ctx.teacher is not None and isinstance(ctx.teacher.module, torch.jit.ScriptModule)
            if script and any(k in weights for k in ("fitnet", *RELATION_TERMS)):
                raise UserInputError(f"loss {cfg.loss!r}: feature and relation losses need the teacher's layers (a .pt2, a squeeze "
                                     "checkpoint or a state_dict + --arch), not TorchScript, whose submodules take no hooks; "
                                     "logit losses (kd, dist) work with any form")

    def planned_work(self, cfg: DistillConfig, ctx: Context) -> tuple[int, int]:
        return cfg.planned_work(len(ctx.data.train)) if ctx.data is not None else (0, 0)

    def run(self, ctx: Context, inp: ModelArtifact, cfg: DistillConfig) -> ModelArtifact:
        """`inp` is the student (architecture + initial weights); ctx.teacher is the teacher."""
        if ctx.teacher is None or ctx.data is None:
            raise UserInputError("distillation needs a teacher and a dataset")
        cfg = replace(cfg, device=ctx.device or cfg.device)  # the run's device, else the pass's own setting
        arch = str(inp.metadata.get("arch", ""))
        run_dir = ctx.run_dir / self.name
        epochs = cfg.planned_work(len(ctx.data.train))[1]
        ctx.progress(f"distilling {arch or 'the student'} from the teacher ({epochs} epochs, loss {cfg.loss})")
        # train a copy: the input stays what the pass before produced (compress measures the searched student
        # as its own stage after the pipeline; trained in place, that row showed the distilled weights)
        student = copy.deepcopy(inp.module)
        if cfg.nproc > 1:
            from squeeze.passes.distill.ddp import distill_distributed

            result = distill_distributed(ctx.teacher, student, ctx.data, cfg, run_dir, student_arch=arch,
                                         student_kwargs=inp.metadata.get("arch_kwargs"), show_progress=True)
            student.load_state_dict(torch.load(run_dir / STUDENT_FILE, weights_only=True)["state_dict"])
        else:
            result = distill(ctx.teacher, student, ctx.data, cfg, run_dir, student_arch=arch,
                             student_kwargs=inp.metadata.get("arch_kwargs"), progress=ctx.progress)
        ctx.results[self.name] = result
        student_file = run_dir / STUDENT_FILE
        return ModelArtifact(student.eval(), ctx.teacher.input_spec, str(student_file), "checkpoint",
                             sha256_file(student_file) if student_file.exists() else "",
                             {"arch": arch, "arch_kwargs": inp.metadata.get("arch_kwargs")},
                             [*inp.provenance, {"pass": "distill", "config": asdict(cfg)}])
