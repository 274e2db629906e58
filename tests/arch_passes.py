"""The corpus (arch_corpus.py) through squeeze's passes, shared by tests/test_arch_corpus.py and tests/arch_table.py:
the real data, the prepared models, and one runner per pass. `outcome()` turns a squeeze error into
"refused: <its message>"; any other exception propagates (a raw traceback is a bug, never a refusal)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arch_corpus import ARCHS, Arch
from squeeze.errors import SqueezeError
from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.io.data import DataBundle, load_data

COLUMNS = ("export + parity", "INT8 QAD + parity", "pruning", "compress quick")
TRAIN_STEPS, TRAIN_BATCH = 16, 64  # a brief real training run per model (prepare())
EVAL_IMAGES = 512  # held-out images per dataset: the INT8 parity check's default sample count
# compress --recipe quick at its smallest: every pass of the chain runs, each as short as it allows. The default
# budget (the teacher's p50 / 4) is below what ONNX Runtime's CPU EP can run at all for teachers this small
# (tens of microseconds), so search runs under the teacher's params/MACs only and prune aims at 0.8x its input.
COMPRESS_OVERRIDES = {
    "search": {"population": 4, "iterations": 4, "profile_iterations": 10, "latency_budget_ms": 1000.0},
    "distill": {"epochs": 1, "min_steps": 10, "batch_size": 64},
    "prune": {"latency_budget_ratio": 0.8, "steps": 1, "candidates": 1, "recover_epochs": 0.05, "final_epochs": 0.05, "profile_rounds": 1, "profile_iterations": 20,
              "final_rounds": 1, "final_iterations": 20},
    "quantize": {"epochs": 0, "calib_samples": 128, "latency_rounds": 1, "latency_iterations": 10},
    "profile": {"spec": {"warmup": 2, "iterations": 20}},
}


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    """("works", what `run` returned) or ("refused: <message>", None) for a squeeze error."""
    try:
        return "works", run()
    except SqueezeError as exc:
        return f"refused: {exc}", None


# ---- data and models ----


def corpus_data(shape: tuple[int, ...], root: Path) -> tuple[DataBundle, str]:
    """(bundle, --data spec) for `shape`: the bundled CIFAR-10 subset's real images (its 2,000 train images, the first
    512 of its 1,000 test images: what parity takes, and half the evaluation time), resized (bilinear, after
    normalisation) where the shape is not 32x32, written as train.npz + test.npz (its given split)."""
    folder = Path(root) / f"cifar10-mini-{shape[1]}x{shape[2]}"
    if not (folder / "test.npz").exists():
        mini = load_data("cifar10-mini")
        folder.mkdir(parents=True, exist_ok=True)
        for part, dataset, n in (("train", mini.full.datasets[0], None), ("test", mini.eval, EVAL_IMAGES)):
            x, y = (t[:n] for t in dataset.tensors)
            if tuple(x.shape[2:]) != tuple(shape[1:]):
                x = F.interpolate(x, size=tuple(shape[1:]), mode="bilinear", align_corners=False)
            np.savez(folder / f"{part}.npz", x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    return load_data(str(folder)), str(folder)


def prepare(arch: Arch, data: DataBundle, steps: int = TRAIN_STEPS) -> nn.Module:
    """The arch, seeded, after a brief real training run: AdamW, `steps` batches of the real train images, each
    labelled by whether it is brighter than the train split's median (a task a few steps learn with confidence).

    Random-init logits (and those of a few steps on CIFAR's own labels) sit within INT8 rounding of each
    other on most images, so the INT8 parity check (top-1 agreement >= 0.99) would compare noise; confident
    predictions are what a trained model gives it. Accuracy is not what these tests are about."""
    model = arch.build()
    x, _ = data.batch("train", steps * TRAIN_BATCH)
    brightness = x.mean(dim=tuple(range(1, x.ndim)))
    y = (brightness > brightness.median()).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for xb, yb in zip(x.split(TRAIN_BATCH), y.split(TRAIN_BATCH)):
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def artifact(name: str, model: nn.Module, data: DataBundle) -> ModelArtifact:
    arch = ARCHS[name]
    spec = InputSpec((1, *arch.input_shape), normalization=data.normalization)
    return ModelArtifact(model, spec, name, "checkpoint", "0" * 64, {"arch": arch_spec(arch), "arch_kwargs": arch_kwargs(arch)})


def arch_spec(arch: Arch) -> str:
    return f"arch_corpus:{arch.factory.__name__}"


def arch_kwargs(arch: Arch) -> dict[str, Any]:
    return {"num_classes": arch.num_classes, **({"image_size": list(arch.input_shape[1:])} if arch.sized else {}), **arch.kwargs}


# ---- one runner per pass ----


def run_export(art: ModelArtifact, data: DataBundle, out: Path, exporter: str = "dynamo"):
    """squeeze's export: ONNX (opset 18, dynamic batch), parity with torch on 256 real eval images (and batch 1)."""
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    return export_onnx(art, out, ExportConfig(exporter=exporter), data)


def run_quantize(art: ModelArtifact, data: DataBundle, root: Path) -> dict[str, Any]:
    """INT8 QAD for the cpu target: PTQ on the calibration split (100 images), one QAT epoch on 256 train images against the
    float model, then QDQ export, the target's graph rules and parity (the pass's own tolerances) on 512 eval
    images. The speed guard is off: its verdict is about the machine, not the architecture."""
    from squeeze.passes.quantize.pass_ import QuantizeConfig, quantize
    from squeeze.targets import get_target

    cfg = QuantizeConfig(epochs=1, train_samples=256, calib_samples=128, batch_size=64, speed_guard=False)
    stage = Path(root) / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    return quantize(art, art, data, get_target("cpu"), cfg, stage, Path(root) / "work")


def macs(module: nn.Module, spec: InputSpec) -> float:
    from squeeze.passes.prune.structure import size_of

    return size_of(module, spec.example())["macs"] / 1e6


def run_prune(art: ModelArtifact, data: DataBundle, out: Path) -> tuple[nn.Module, dict[str, Any], Any]:
    """One dependency-graph width step (ratio 0.5, widths in blocks of 8 on any host), latency taken as MACs
    (deterministic), no recovery training; then the pruned model is exported with parity on real data (with the
    legacy exporter, 5x faster here than dynamo, whose export of the same architecture is the export column)."""
    from squeeze.passes.prune import CallableLatency, PruneConfig, prune_model
    from squeeze.targets import get_target

    cfg = PruneConfig(steps=1, recover_epochs=0, final_epochs=0, profile_rounds=1, final_rounds=1, channel_multiple=8)
    meter = CallableLatency(lambda m: macs(m, art.input_spec))
    pruned, result = prune_model(art, data, get_target("cpu"), cfg, meter=meter)
    pruned_art = ModelArtifact(pruned, art.input_spec, f"{art.source} (pruned)", "checkpoint", "0" * 64)
    return pruned, result, run_export(pruned_art, data, out, exporter="legacy")


def run_compress(art: ModelArtifact, data_spec: str, root: Path) -> dict[str, Any]:
    """`squeeze compress --recipe quick` (COMPRESS_OVERRIDES make every pass as short as it allows) with the model
    as the teacher, saved as a squeeze checkpoint of its arch_corpus factory, on the real data."""
    from squeeze import api
    from squeeze.io.modelio import save_checkpoint

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "teacher.pt"
    save_checkpoint(art.module, path, arch=art.metadata["arch"], arch_kwargs=art.metadata["arch_kwargs"], input_spec=art.input_spec)
    return api.compress(path, target="cpu", out=root / "out", data=data_spec, arch=art.metadata["arch"], recipe="quick",
                        overrides=COMPRESS_OVERRIDES, cache_dir=root / "cache")
