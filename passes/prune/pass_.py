"""prune(): the loop, then a reloadable squeeze checkpoint that records the pruned structure; PrunePass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from squeeze.errors import SqueezeError, UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.passes.base import Context, PassBase, Placement, Requires
from squeeze.passes.prune.config import PruneConfig
from squeeze.passes.prune.latency import LatencyMeter
from squeeze.passes.prune.loop import prune_model
from squeeze.passes.prune.structure import check_float_model  # noqa: F401 - part of the pass's interface
from squeeze.targets.base import Target

MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"


def prune(
    model: ModelArtifact,
    data: DataBundle,
    target: Target,
    cfg: PruneConfig,
    out_dir: Path,
    *,
    teacher: ModelArtifact | None = None,
    meter: LatencyMeter | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """prune_model, then write out_dir/model.pt (a reloadable squeeze checkpoint) and out_dir/result.json.

    The caller stages out_dir (api.prune uses fsutil.atomic_dir) so a failed run leaves nothing behind.
    """
    from squeeze.io.modelio import load_model, save_checkpoint
    from squeeze.io.structure import record_structure

    arch = str(model.metadata.get("arch") or "")
    if not arch:
        raise UserInputError(f"{model.source}: pruning writes a squeeze checkpoint, which needs the architecture's factory; "
                             "load the model from a squeeze checkpoint or a state_dict with --arch")
    arch_kwargs = dict(model.metadata.get("arch_kwargs") or {})
    pruned, result = prune_model(model, data, target, cfg, teacher=teacher, meter=meter, progress=progress)

    # Relative to the plain factory model, so a model pruned twice records every edit.
    structure = record_structure(pruned, _factory_model(arch, arch_kwargs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in model.metadata.items() if k not in ("arch", "arch_kwargs", "structure")}
    meta.update({"eval_accuracy": result["pruned"]["eval_accuracy"], "pruned_from": model.sha256, "prune": asdict(cfg)})
    save_checkpoint(pruned, out_dir / MODEL_FILE, arch=arch, arch_kwargs=arch_kwargs, input_spec=model.input_spec,
                    metadata=meta, structure=structure)
    # The file must rebuild to the very model in memory: reload (weights-only) and compare outputs.
    reloaded = load_model(out_dir / MODEL_FILE, arch=arch if not arch.startswith("squeeze.") else None)
    x = model.input_spec.example(batch=4).normal_(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((reloaded.module(x) - pruned(x)).abs().max())
    if diff > 1e-5:
        raise SqueezeError(f"the saved pruned model does not reproduce the pruned model (max |diff| {diff:.2e})")
    result["model_file"] = str(out_dir / MODEL_FILE)
    result["model_sha256"] = sha256_file(out_dir / MODEL_FILE)
    result["structure"] = structure
    write_json_atomic(out_dir / RESULT_FILE, result)
    return result


def _factory_model(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    from squeeze.io.data import import_object

    return import_object(arch, "--arch")(**kwargs)


class PrunePass(PassBase):
    name: ClassVar[str] = "prune"
    Config: ClassVar[type] = PruneConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = ModelArtifact
    requires: ClassVar[Requires] = Requires(data=True)  # any output: logits get KD, maps and values output matching
    placement: ClassVar[Placement] = Placement(before=("quantize",), why="dependency-graph pruning of a fake-quantized model breaks "
                                               "(Torch-Pruning #291); prune the float model, then quantize")
    produces_stage: ClassVar[bool] = True

    def check(self, cfg: PruneConfig, ctx: Context) -> None:
        from squeeze.train.precision import resolve_precision

        resolve_precision(cfg.precision, ctx.device or cfg.device)  # bf16 on a CPU without it: refused before any work

    def check_input(self, cfg: PruneConfig, art: ModelArtifact) -> None:
        check_float_model(art)  # a .pt2 or TorchScript graph, or a quantized model: refused before any work
        if not art.metadata.get("arch"):
            raise UserInputError(f"{art.source}: pruning writes a squeeze checkpoint, which needs the architecture's factory; "
                                 "load the model from a squeeze checkpoint or a state_dict with --arch")

    def planned_work(self, cfg: PruneConfig, ctx: Context) -> tuple[int, int]:
        """At most: every step accepted and recovered, then the final recovery (a met budget stops it early)."""
        steps = len(cfg.plan) or cfg.steps
        return (int((steps * cfg.recover_epochs + cfg.final_epochs) * len(ctx.data.train)) if ctx.data is not None else 0), 0

    def run(self, ctx: Context, inp: ModelArtifact, cfg: PruneConfig) -> ModelArtifact:
        """`inp` is the float model to prune; ctx.teacher (else `inp` itself) gives the logit targets."""
        if ctx.data is None:
            raise UserInputError("pruning needs a dataset (calibration, recovery and evaluation)")
        cfg = replace(cfg, device=ctx.device or cfg.device)  # the run's device, else the pass's own setting
        run_dir = ctx.run_dir / self.name
        ctx.progress(f"pruning toward {'the latency budget' if cfg.has_budget else f'ratio {cfg.ratio}'} on {ctx.target.name}")
        result = prune(inp, ctx.data, ctx.target, cfg, run_dir, teacher=ctx.teacher, progress=ctx.progress)
        ctx.results[self.name] = result
        from squeeze.io.modelio import load_model

        art = load_model(run_dir / MODEL_FILE, arch=None if str(inp.metadata.get("arch", "")).startswith("squeeze.") else inp.metadata.get("arch"))
        art.provenance = [*inp.provenance, {"pass": "prune", "config": asdict(cfg)}]
        return art
