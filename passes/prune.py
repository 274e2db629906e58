"""Prune pass: dependency-graph structured pruning, chosen by measured latency, recovered by layer distillation.

Each step builds candidate models, measures them on the target next to the current model (and the
unpruned input) in interleaved rounds, and keeps one:
- width candidates: every prunable layer cut to a cumulative fraction of its *original* width
  (Torch-Pruning's DependencyGraph keeps residual adds, depthwise convs and the classifier's input
  consistent; the classifier's outputs are kept), rounded to the target's `channel_multiple`;
- a depth candidate (with `depth`): the identity-shaped block with the lowest block importance
  BI = 1 - E[cos(block input, block output)] on calibration data, replaced by nn.Identity.
With a latency budget the step aims at a geometric share of the remaining gap and keeps the
candidate that reaches it with the least damage (KL to the current model on calibration data);
without one, the linear width schedule sets the aim. A step whose measured latency is not lower
than the current model's (median of per-round ratios) is rejected: smaller but not faster is not
accepted. Between steps the kept model is recovered by distillation: logit KD from the teacher,
plus, with `layer_distill`, a normalised MSE between each kept block's output and the unpruned
model's (1x1 adapters where widths differ); with `teacher_forced`, the block next to a removed
depth interval is first trained on the pre-step model's input to that interval (PPCL-style).

Pruning needs a float model: fake-quant observers are not pruned with their layers (Torch-Pruning
#291), so the right order is prune, then quantize.
"""

from __future__ import annotations

import copy
import hashlib
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.train import losses
from squeeze.measure.analysis import count_macs, count_params, evaluating
from squeeze.io.artifacts import InputSpec, ModelArtifact, OnnxArtifact
from squeeze.io.data import DataBundle
from squeeze.errors import SqueezeError, TargetUnavailableError, UserInputError
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.passes.base import Context, PassBase, Placement, Requires
from squeeze.targets.base import Target

IMPORTANCES = ("l2", "taylor", "bn")
MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"
LATENCY_STATS = ("p50", "min", "mean")
CALIBRATION_BATCH = 256  # samples for block importance, damage (KL) and Taylor gradients


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.5  # at most this fraction of each layer's channels is removed over the whole run
    steps: int = 4  # prune + recover rounds (the most; the run stops once the budget is met)
    importance: str = "l2"  # l2 (group L2 magnitude), taylor (|w·dL/dw| on calibration data), bn (BatchNorm |γ|)
    depth: bool = False  # also consider removing whole identity-shaped residual blocks
    latency_budget_ms: float | None = None  # target latency (median) on the target
    latency_budget_ratio: float | None = None  # ... or as a fraction of the input model's latency measured in the same run
    candidates: int = 3  # width candidates per step when a budget is set
    min_gain: float = 0.02  # a step must be at least this much faster than the current model (median per-round ratio)
    layer_distill: bool = True  # per-block normalised MSE to the unpruned model (+ logit KD); off: logit KD only
    feature_weight: float = 1.0
    teacher_forced: bool = False  # train the block beside a removed interval on the pre-step model's input first
    teacher_forced_fraction: float = 0.5  # share of a depth step's recovery spent teacher-forced
    alpha: float = 0.9  # logit-KD weight; CE on labels gets 1 - alpha
    temperature: float = 4.0
    recover_epochs: float = 1.0  # recovery after each accepted step (fractions of an epoch allowed)
    final_epochs: float = 2.0  # recovery after the last step; the best epoch is picked on the calibration split
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    plan: tuple[str, ...] = ()  # replay these steps ("width:0.25", "depth:stages.1.1") instead of searching
    profile_rounds: int = 5  # interleaved rounds per step measurement
    profile_iterations: int = 100
    profile_warmup: int = 10
    profile_threads: int | None = None
    final_rounds: int = 5  # the closing input-vs-pruned measurement
    final_iterations: int = 200
    exporter: str = "dynamo"  # ONNX exporter for every timed graph: the one `squeeze export` ships (legacy is faster)
    latency_stat: str = "p50"  # per-round statistic compared: p50, or min (robust when a shared CPU is oversubscribed)

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise UserInputError(f"--ratio must be in (0, 1) (the fraction of channels removed), got {self.ratio}")
        if self.steps < 1 or self.candidates < 1:
            raise UserInputError("--steps and --candidates must be >= 1")
        if self.importance not in IMPORTANCES:
            raise UserInputError(f"--importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if self.latency_budget_ms is not None and self.latency_budget_ratio is not None:
            raise UserInputError("give the latency budget either in time (e.g. 1ms) or relative to the input (e.g. 0.5x), not both")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UserInputError("--latency-budget must be > 0")
        if self.latency_budget_ratio is not None and not 0.0 < self.latency_budget_ratio < 1.0:
            raise UserInputError(f"a relative latency budget must be in (0, 1)x of the input's latency, got {self.latency_budget_ratio}x")
        if not 0.0 <= self.min_gain < 1.0 or not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise UserInputError("--min-gain must be in [0, 1), --alpha in [0, 1] and --temperature > 0")
        if self.recover_epochs < 0 or self.final_epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise UserInputError("--recover-epochs and --final-epochs must be >= 0, --lr > 0 and --batch-size >= 1")
        if not 0.0 <= self.teacher_forced_fraction <= 1.0 or self.feature_weight < 0:
            raise UserInputError("teacher_forced_fraction must be in [0, 1] and feature_weight >= 0")
        if min(self.profile_rounds, self.final_rounds) < 1 or min(self.profile_iterations, self.final_iterations) < 2:
            raise UserInputError("profile rounds must be >= 1 and iterations >= 2")
        if self.latency_stat not in LATENCY_STATS:
            raise UserInputError(f"--latency-stat must be one of {', '.join(LATENCY_STATS)}, got {self.latency_stat!r}")
        if self.exporter not in ("legacy", "dynamo"):
            raise UserInputError(f"exporter must be legacy or dynamo, got {self.exporter!r}")
        for action in self.plan:
            parse_action(action)

    @property
    def has_budget(self) -> bool:
        return self.latency_budget_ms is not None or self.latency_budget_ratio is not None

    def width_schedule(self) -> list[float]:
        """Nominal cumulative channel ratio after each step (Torch-Pruning's linear scheduler)."""
        return [self.ratio * (k + 1) / self.steps for k in range(self.steps)]


def parse_action(text: str) -> tuple[str, Any]:
    kind, _, arg = str(text).partition(":")
    if kind == "width":
        try:
            value = float(arg)
        except ValueError:
            value = -1.0
        if not 0.0 < value < 1.0:
            raise UserInputError(f"plan step {text!r}: width needs a cumulative channel ratio in (0, 1), e.g. width:0.25")
        return kind, value
    if kind == "depth" and arg:
        return kind, arg
    raise UserInputError(f"plan step {text!r} must be width:RATIO or depth:BLOCK_NAME")


# ----------------------------------------------------------------------------------------------
# Input checks


QUANTIZER_MODULE_PREFIXES = ("torch.ao.nn.qat", "torch.ao.nn.quantized", "torch.ao.nn.intrinsic.qat", "torch.nn.qat",
                             "torch.nn.quantized", "nncf.", "modelopt.torch.quantization")


def find_quantizer(module: nn.Module) -> str | None:
    """The first fake-quant / observer / quantized layer, as 'name (Type)', or None for a float model."""
    from torch.ao.quantization import FakeQuantizeBase, ObserverBase

    for name, m in module.named_modules():
        cls = type(m)
        if isinstance(m, (FakeQuantizeBase, ObserverBase)) or cls.__module__.startswith(QUANTIZER_MODULE_PREFIXES):
            return f"{name or '(root)'} ({cls.__name__})"
    return None


def check_float_model(art: ModelArtifact) -> None:
    if art.format in ("pt2", "torchscript") or isinstance(art.module, (torch.fx.GraphModule, torch.jit.ScriptModule)):
        raise UserInputError(f"{art.source} is a {art.format} graph; pruning edits layers, so it needs the model as an nn.Module: "
                             "a squeeze checkpoint, or a state_dict with --arch")
    found = find_quantizer(art.module)
    if found:
        raise UserInputError(f"{art.source} is quantized (it has {found}); prune the float model first, then quantize "
                             "(pass order: prune -> quantize): fake-quant observers are not pruned with their layers (Torch-Pruning #291)")
    if any(p.dtype != torch.float32 for p in art.module.parameters()):
        raise UserInputError(f"{art.source} has non-float32 parameters; prune the float32 model")


def locate_forward_failure(module: nn.Module, x: torch.Tensor, grad: bool = False) -> tuple[str, str] | None:
    """Run `module(x)`; on failure (where, first line of the error) for the innermost layer whose forward raised."""
    stack: list[str] = []
    hooks = []
    for name, m in module.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name) and None))
        hooks.append(m.register_forward_hook(lambda _m, _i, _o: (stack.pop() if stack else None) and None))  # None: keep the output
    try:
        with torch.set_grad_enabled(grad), evaluating(module):
            module(x)
    except Exception as exc:
        name = stack[-1] if stack else ""
        kind = type(module.get_submodule(name)).__name__ if name else type(module).__name__
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return (f"layer {name!r} ({kind})" if name else f"the forward of {kind} itself"), first[:200]
    finally:
        for h in hooks:
            h.remove()
    return None


# ----------------------------------------------------------------------------------------------
# Structure: layers, blocks, widths


def output_layer(module: nn.Module, example: torch.Tensor) -> str:
    """The last Conv/Linear to run: the classifier, whose outputs (the classes) are never pruned."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
             for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad(), evaluating(module):
            module(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise UserInputError(f"{type(module).__name__} has no Conv or Linear layer to prune")
    return order[-1]


def layer_widths(module: nn.Module) -> dict[str, int]:
    """Output channels of every Conv/Linear, by name."""
    return {name: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for name, m in module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def planned_width(original: int, ratio: float, multiple: int, groups: int = 1) -> int:
    """Channels kept of `original` at cumulative `ratio`: rounded to the nearest multiple (never below one
    multiple, never above the original); layers already no wider than one multiple are left alone."""
    unit = math.lcm(max(1, multiple), max(1, groups))
    if original <= unit:
        return original
    kept = math.floor(original * (1.0 - ratio) / unit + 0.5) * unit  # half rounds up, unlike round()
    return int(min(original, max(unit, kept)))


def block_names(module: nn.Module) -> list[str]:
    """Blocks: composite layers that are items of an nn.Sequential (ResNet basic blocks, inverted residuals)."""
    names = []
    for parent_name, parent in module.named_modules():
        if isinstance(parent, nn.Sequential):
            for child_name, child in parent.named_children():
                if not isinstance(child, (nn.Sequential, nn.Identity)) and any(True for _ in child.children()):
                    names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


@torch.no_grad()
def block_importance(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """BI = 1 - E[cos(input, output)] of every identity-shaped block (input shape == output shape), on `x`.

    A residual block whose output barely turns its input (BI near 0) is the cheapest to remove.
    """
    names = block_names(module)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    modules = dict(module.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, inp, out, n=n: captured.__setitem__(n, (inp[0], out))) for n in names]
    try:
        with evaluating(module):
            module(x)
    finally:
        for h in hooks:
            h.remove()
    scores = {}
    for n in names:
        if n in captured and isinstance(captured[n][1], torch.Tensor) and captured[n][0].shape == captured[n][1].shape:
            a, b = captured[n][0].flatten(1), captured[n][1].flatten(1)
            scores[n] = float(1.0 - F.cosine_similarity(a, b, dim=1).mean())
    return scores


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def prune_width(model: nn.Module, example: torch.Tensor, original: dict[str, int], ratio: float, multiple: int, classifier: str,
                importance: str, calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
                teacher: nn.Module | None = None) -> dict[str, int]:
    """Cut every prunable layer of `model` (in place) to planned_width(original width, ratio); returns the new widths.

    Torch-Pruning's DependencyGraph finds the coupled groups; a per-root ratio is set so that each group
    keeps exactly the planned count (its own `round_to` rounds down from the current width and can hit 0).
    """
    import torch_pruning as tp

    modules = dict(model.named_modules())
    ratios: dict[nn.Module, float] = {}
    for name, current in layer_widths(model).items():
        if name == classifier or name not in original:
            continue
        m = modules[name]
        groups = m.groups if isinstance(m, nn.modules.conv._ConvNd) and m.groups not in (1, m.out_channels) else 1
        target = planned_width(original[name], ratio, multiple, groups)
        if target < current:
            ratios[m] = (current - target - 0.5) / current  # int(current * (1 - r)) == target
    if not ratios:
        return layer_widths(model)
    failure = locate_forward_failure(model, example, grad=True)
    if failure:
        raise UserInputError(f"Torch-Pruning cannot trace {type(model).__name__}: {failure[0]} fails: {failure[1]}")
    try:
        pruner = tp.pruner.BasePruner(model, example, importance=_importance(importance), pruning_ratio=0.0,
                                      pruning_ratio_dict=ratios, ignored_layers=[modules[classifier]], round_to=None)
    except Exception as exc:
        raise UserInputError(f"Torch-Pruning cannot trace {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if importance == "taylor":
        if calibration is None:
            raise UserInputError("taylor importance needs calibration data")
        x, y = calibration
        model.zero_grad(set_to_none=True)
        with evaluating(model):
            logits = model(x)
            if (y >= 0).all():
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    t_logits = (teacher or model)(x)
                loss = losses.kd_loss(logits, t_logits, 1.0)
            loss.backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    failure = locate_forward_failure(model, example)
    if failure:
        raise UserInputError(f"pruning broke the model at {failure[0]}: {failure[1]}; Torch-Pruning could not follow this layer's "
                             "channel dependency (a buffer, a hard-coded shape or a functional op); rewrite it with standard layers")
    return layer_widths(model)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Re-estimate BatchNorm statistics on calibration data after a structural edit (adaptive BN,
    EagleEye, Li et al. 2020): the old statistics describe inputs the pruned layers no longer produce,
    and with fresh ones the damage measured before recovery ranks candidates far better."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = model.training
    model.train()
    try:
        for chunk in x.split(batch):
            model(chunk)
    finally:
        model.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def remove_block(model: nn.Module, name: str) -> None:
    from squeeze.io.structure import _set_submodule

    _set_submodule(model, name, nn.Identity())


def architecture_key(model: nn.Module) -> str:
    """Same key <=> same layer shapes and removed blocks, hence the same latency (weights do not matter)."""
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    identities = [n for n, m in model.named_modules() if isinstance(m, nn.Identity)]
    return hashlib.sha256(repr((shapes, identities)).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Latency: measured on the target (or its offline prediction), interleaved, noise-aware


@dataclass
class Measurement:
    """Latencies (ms) of several models, one value per interleaved round."""

    rounds: list[list[float]]  # [model][round]
    kind: str  # "measured", "predicted" or "injected"
    stats: list[dict[str, Any] | None] = field(default_factory=list)

    def latency(self, i: int) -> float:
        return float(statistics.median(self.rounds[i]))

    def ratio(self, i: int, j: int) -> float:
        """Median over rounds of latency(i) / latency(j): each ratio compares numbers taken moments apart."""
        return float(statistics.median(a / b for a, b in zip(self.rounds[i], self.rounds[j])))


class LatencyMeter:
    """Protocol: measure(models, rounds, iterations) -> Measurement."""

    kind: str = "measured"

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:  # pragma: no cover
        raise NotImplementedError


class TargetLatency(LatencyMeter):
    """Export each model to ONNX and time it with the target's own profiler (`target.profile`).

    Targets that cannot measure on this machine but offer `predict(onnx, spec)` are used through
    it, and every figure is labelled "predicted". Models are measured round-robin, the order
    rotating each round, so slow drift on a shared machine hits all of them alike.
    """

    def __init__(self, target: Target, spec: InputSpec, workdir: Path, exporter: str = "dynamo", threads: int | None = None,
                 cache: bool = True, stat: str = "p50"):
        self.target, self.spec, self.workdir, self.exporter, self.threads, self.cache = target, spec, Path(workdir), exporter, threads, cache
        self.stat = f"{stat}_ms"
        availability = target.available()
        if availability.available:
            self.kind = "measured"
        elif target.can_predict():
            self.kind = "predicted"
        else:
            raise TargetUnavailableError(f"target {target.name} cannot measure latency here and has no offline predictor: {availability.reason}")
        self._onnx: dict[str, OnnxArtifact] = {}

    def _export(self, model: nn.Module) -> OnnxArtifact:
        from squeeze.passes.export import ExportConfig, export_onnx

        key = architecture_key(model) if self.cache else f"{id(model)}-{len(self._onnx)}"
        if key not in self._onnx:
            art = ModelArtifact(model.eval(), self.spec, "prune-candidate", "checkpoint", "")
            path = self.workdir / f"{key}-{self.exporter}.onnx"
            self._onnx[key] = export_onnx(art, path, ExportConfig(exporter=self.exporter, parity_samples=8))
        return self._onnx[key]

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:
        """One interleaved comparison (squeeze/measure/latency.py) of the models, the first as the reference;
        at least `rounds` rounds, more (up to twice) while a ratio to the first is loose."""
        from squeeze.measure.latency import MeasureConfig, compare

        arts = {str(i): self._export(m) for i, m in enumerate(models)}
        settings = MeasureConfig(block_iterations=iterations, warmup=warmup, min_rounds=rounds, max_rounds=2 * rounds, time_cap_s=120.0,
                                 statistic=self.stat.removesuffix("_ms"), threads=self.threads)
        result = compare(self.target, arts, settings, reference="0")
        return Measurement([result.per_round[n] for n in arts], result.kind, [result.stats[n] for n in arts])


class CallableLatency(LatencyMeter):
    """Latency from a function of the model (tests inject deterministic ones; no export)."""

    def __init__(self, fn: Callable[[nn.Module], float], kind: str = "injected"):
        self.fn, self.kind = fn, kind

    def measure(self, models: Sequence[nn.Module], rounds: int, iterations: int, warmup: int) -> Measurement:
        return Measurement([[float(self.fn(m))] for m in models], self.kind, [None] * len(models))


# ----------------------------------------------------------------------------------------------
# Recovery: logit KD + per-block normalised MSE to the unpruned model (+ teacher-forced interval)


def nmse(student: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """||s - t||² / ||t||² per sample, averaged: scale-free, so every block weighs alike."""
    s, t = student.flatten(1), target.flatten(1)
    return ((s - t).pow(2).sum(1) / (t.pow(2).sum(1) + eps)).mean()


class BlockAdapters(nn.Module):
    """1x1 convs from a pruned block's channels to the unpruned block's, initialised by least squares
    on calibration features (the kept channels are a subset, so this starts near the right map)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.adapters = nn.ModuleList()
        for s, t in pairs:
            conv = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False) if s.ndim == 4 else nn.Linear(s.shape[1], t.shape[1], bias=False)
            a = s.transpose(0, 1).flatten(1).t() if s.ndim == 4 else s  # [pixels, Cs]
            b = t.transpose(0, 1).flatten(1).t() if t.ndim == 4 else t  # [pixels, Ct]
            a, b = a.double(), b.double()
            gram = a.t() @ a  # ridge least squares: dead (all-zero) channels would make plain lstsq blow up
            ridge = 1e-3 * gram.diagonal().mean().clamp(min=1e-8) * torch.eye(len(gram), dtype=gram.dtype)
            solution = torch.linalg.solve(gram + ridge, a.t() @ b).float()  # [Cs, Ct]
            with torch.no_grad():
                conv.weight.copy_(solution.t().reshape(conv.weight.shape))
            self.adapters.append(conv)

    def forward(self, student: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        total = student[0].new_zeros(())
        for adapter, s, t in zip(self.adapters, student, reference):
            total = total + nmse(adapter(s), t.detach())
        return total / max(1, len(self.adapters))


@dataclass
class TeacherForcing:
    """Train `student_block` to map the pre-step model's input of `first` to its output of `last`."""

    student_block: str
    first: str
    last: str
    reference: nn.Module


def _taps(module: nn.Module, inputs: Sequence[str], outputs: Sequence[str]):
    store: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    hooks = [modules[n].register_forward_pre_hook(lambda _m, inp, n=n: store.__setitem__("in:" + n, inp[0])) for n in inputs]
    hooks += [modules[n].register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__("out:" + n, out)) for n in outputs]
    return store, hooks


class TrainSet:
    """The train split for recovery. Without augmentation the teacher's logits never change, so when the
    split fits in memory they are computed once per run and reused by every step (a teacher forward per
    batch is most of the cost of recovery on a CPU)."""

    MAX_CACHED_VALUES = 64_000_000  # 256 MB of float32 inputs

    def __init__(self, data: DataBundle, teacher: nn.Module, device: str):
        self.data, self.teacher, self.device = data, teacher, device
        self.x = self.y = self._logits = None
        n = len(data.train)
        if n * math.prod(data.sample_shape) <= self.MAX_CACHED_VALUES:
            xs, ys = zip(*(data.train[i] for i in range(n)))
            self.x, self.y = torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data.train)

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            with evaluating(self.teacher):
                self._logits = torch.cat([self.teacher(chunk.to(self.device)).float().cpu() for chunk in self.x.split(256)])
        return self._logits

    def batches(self, batch_size: int, seed: int, drop_last: bool, with_logits: bool):
        """(x, y, teacher logits or None) in a seeded shuffled order."""
        if self.x is None:
            for x, y in self.data.loader("train", batch_size=batch_size, shuffle=True, seed=seed, drop_last=drop_last):
                yield x.to(self.device), y.to(self.device), None
            return
        logits = self.logits() if with_logits else None
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(seed))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            yield (self.x[idx].to(self.device), self.y[idx].to(self.device),
                   None if logits is None else logits[idx].to(self.device))


def recover(student: nn.Module, teacher: nn.Module, reference: nn.Module, data: DataBundle, cfg: PruneConfig, epochs: float, *,
            seed: int, train: TrainSet | None = None, forcing: TeacherForcing | None = None, select_best: bool = False,
            progress=lambda m: None) -> dict[str, Any]:
    """Fine-tune `student` in place by distillation; returns loss figures (and per-epoch calibration accuracy)."""
    from squeeze.passes.distill.pass_ import evaluate

    if epochs <= 0:
        return {"batches": 0}
    device = cfg.device
    train = train or TrainSet(data, teacher, device)
    use_labels = data.has_labels
    w_kd = cfg.alpha if use_labels else 1.0
    w_ce = 1.0 - cfg.alpha if use_labels else 0.0
    for m in (teacher, reference):
        for p in m.parameters():
            p.requires_grad_(False)
    cal_x, _ = data.batch("calibration", 128)
    cal_x = cal_x.to(device)
    student_modules = dict(student.named_modules())
    pairs = [n for n in block_names(reference) if n in student_modules and not isinstance(student_modules[n], nn.Identity)] if cfg.layer_distill else []
    s_store, s_hooks = _taps(student, [], pairs)
    r_store, r_hooks = _taps(reference, [], pairs)
    f_store, f_hooks = ({}, [])
    if forcing is not None:
        f_store, f_hooks = _taps(forcing.reference, [forcing.first], [forcing.last])
        forcing.reference.eval()
        for p in forcing.reference.parameters():
            p.requires_grad_(False)
    # With layer distillation from the unpruned model that is also the teacher, one forward gives both.
    teacher_per_batch = bool(pairs) and teacher is reference
    try:
        adapters = None
        if pairs:
            with torch.no_grad(), evaluating(student), evaluating(reference):
                student(cal_x)
                reference(cal_x)
            adapters = BlockAdapters([(s_store["out:" + n], r_store["out:" + n]) for n in pairs]).to(device)
        params = [*student.parameters(), *(adapters.parameters() if adapters is not None else [])]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        drop_last = len(train) > cfg.batch_size
        per_epoch = max(1, len(train) // cfg.batch_size if drop_last else 1)
        total = max(1, int(round(epochs * per_epoch)))
        forced_batches = int(round(cfg.teacher_forced_fraction * total)) if forcing is not None else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        sums: dict[str, float] = {}
        best = {"score": -1.0, "state": None, "epoch": 0}
        history = []
        cal_loader = data.loader("calibration", batch_size=512)
        step, epoch = 0, 0
        with evaluating(teacher), evaluating(reference):
            while step < total:
                torch.manual_seed(seed * 100_003 + epoch)
                student.train()
                for x, y, t_logits in train.batches(cfg.batch_size, seed * 100_003 + epoch, drop_last, with_logits=not teacher_per_batch):
                    if step >= total:
                        break
                    with torch.no_grad():
                        if t_logits is None:
                            t_logits = teacher(x).float()
                        if pairs and not teacher_per_batch:
                            reference(x)
                    logits = student(x)
                    parts = {"kd": losses.kd_loss(logits, t_logits, cfg.temperature) * w_kd}
                    if w_ce > 0:
                        parts["ce"] = F.cross_entropy(logits, y) * w_ce
                    if adapters is not None:
                        parts["layer"] = cfg.feature_weight * adapters([s_store["out:" + n] for n in pairs], [r_store["out:" + n] for n in pairs])
                    if step < forced_batches:
                        with torch.no_grad():
                            forcing.reference(x)  # type: ignore[union-attr]
                        block = student.get_submodule(forcing.student_block)  # type: ignore[union-attr]
                        parts["teacher_forced"] = nmse(block(f_store["in:" + forcing.first]), f_store["out:" + forcing.last])  # type: ignore[union-attr]
                    loss = sum(parts.values())
                    if not torch.isfinite(loss):
                        raise SqueezeError(f"recovery diverged (non-finite loss) at batch {step}; lower --lr (now {cfg.lr})")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                    step += 1
                epoch += 1
                if select_best:
                    cal = evaluate(student, teacher, cal_loader, device)
                    score = cal["student_accuracy"] if cal["student_accuracy"] is not None else cal["agreement"]
                    history.append({"epoch": epoch, "calibration": cal})
                    progress(f"recovery epoch {epoch}: calibration {'accuracy' if cal['student_accuracy'] is not None else 'agreement'} {score * 100:.2f}%")
                    if score > best["score"]:
                        best = {"score": score, "state": copy.deepcopy(student.state_dict()), "epoch": epoch}
        if select_best and best["state"] is not None:
            student.load_state_dict(best["state"])
        student.eval()
        return {"batches": step, **{f"mean_{k}": v / max(1, step) for k, v in sums.items()},
                **({"best_epoch": best["epoch"], "history": history} if select_best else {})}
    finally:
        for h in [*s_hooks, *r_hooks, *f_hooks]:
            h.remove()


def _forcing_for(model_before: nn.Module, removed: str) -> TeacherForcing | None:
    """The kept sibling before the removed block (else after it) replaces the interval it spans."""
    parent_name, _, child = removed.rpartition(".")
    parent = model_before.get_submodule(parent_name) if parent_name else model_before
    if not isinstance(parent, nn.Sequential):
        return None
    names = [n for n, _ in parent.named_children()]
    i = names.index(child)
    full = lambda n: f"{parent_name}.{n}" if parent_name else n  # noqa: E731
    for j in range(i - 1, -1, -1):
        if not isinstance(parent[j], nn.Identity):
            return TeacherForcing(full(names[j]), first=full(names[j]), last=removed, reference=model_before)
    for j in range(i + 1, len(names)):
        if not isinstance(parent[j], nn.Identity):
            return TeacherForcing(full(names[j]), first=removed, last=full(names[j]), reference=model_before)
    return None


# ----------------------------------------------------------------------------------------------
# The pruning loop


@torch.no_grad()
def _damage(current: nn.Module, candidate: nn.Module, x: torch.Tensor) -> float:
    """KL(current || candidate) on calibration inputs: how much the cut changed the outputs."""
    with evaluating(current), evaluating(candidate):
        return float(F.kl_div(F.log_softmax(candidate(x), 1), F.softmax(current(x), 1), reduction="batchmean"))


_SIZES: dict[str, dict[str, int]] = {}


def _size(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Params and MACs, cached by architecture (counting MACs runs a dispatcher-level forward)."""
    key = f"{architecture_key(model)}-{tuple(example.shape)}"
    if key not in _SIZES:
        _SIZES[key] = {"params": count_params(model), "macs": count_macs(model, example)}
    return dict(_SIZES[key])


class EvalSplit:
    """Accuracy on the eval split and top-1 agreement with the teacher, whose predictions are computed once."""

    def __init__(self, data: DataBundle, teacher: nn.Module, device: str):
        from squeeze.measure.accuracy import torch_predictions

        self.loader, self.device = data.loader("eval", batch_size=512), device
        self.teacher_pred, self.labels = torch_predictions(teacher, self.loader, device)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        from squeeze.measure.accuracy import accuracy, torch_predictions

        pred, _ = torch_predictions(model, self.loader, self.device)
        return {"samples": int(len(self.labels)), "student_accuracy": accuracy(pred, self.labels),
                "teacher_accuracy": accuracy(self.teacher_pred, self.labels), "agreement": float((pred == self.teacher_pred).mean())}


def prune_model(
    model: ModelArtifact,
    data: DataBundle,
    target: Target,
    cfg: PruneConfig,
    *,
    teacher: ModelArtifact | None = None,
    meter: LatencyMeter | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune `model` toward the latency budget; returns the pruned module and the per-step record. Writes no files."""
    from squeeze.passes.distill.pass_ import check_inputs

    started = time.perf_counter()
    check_float_model(model)  # the teacher only gives logits: any format will do
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda requested but torch sees no CUDA device")
    torch.manual_seed(cfg.seed)
    reference = copy.deepcopy(model.module).eval().to(device)  # the unpruned model: layer-distillation targets
    check_inputs(model, reference, data)
    t_module = _frozen(teacher.module, device) if teacher is not None else reference
    if teacher is not None:
        check_inputs(teacher, reference, data)
    example = model.input_spec.example(batch=1).to(device)
    classifier = output_layer(reference, example)
    original = layer_widths(reference)
    multiple = int(getattr(target, "channel_multiple", 1) or 1)
    cal_x, cal_y = data.batch("calibration", CALIBRATION_BATCH)
    cal_x, cal_y = cal_x.to(device), cal_y.to(device)
    train = TrainSet(data, t_module, device)

    tmp = tempfile.TemporaryDirectory(prefix="squeeze-prune-")
    try:
        meter = meter or TargetLatency(target, model.input_spec, Path(tmp.name), exporter=cfg.exporter, threads=cfg.profile_threads,
                                       stat=cfg.latency_stat)
        current = copy.deepcopy(reference)
        base_size = _size(reference, example)
        progress(f"measuring the input model on {target.name}")
        first = meter.measure([reference], cfg.profile_rounds, cfg.profile_iterations, cfg.profile_warmup)
        base_ms = first.latency(0)
        budget_ms = cfg.latency_budget_ms if cfg.latency_budget_ms is not None else (
            cfg.latency_budget_ratio * base_ms if cfg.latency_budget_ratio is not None else None)
        evaluate_eval = EvalSplit(data, t_module, device)
        input_acc = evaluate_eval(reference)
        rows: list[dict[str, Any]] = [{
            "step": 0, "action": "input", "accepted": True, "params": base_size["params"], "macs": base_size["macs"], "macs_ratio": 1.0,
            "latency_ms": base_ms, "latency_ratio": 1.0, "eval_accuracy": input_acc["student_accuracy"], "agreement": input_acc["agreement"],
        }]
        current_ratio_to_base, cum_ratio = 1.0, 0.0
        removed: list[str] = []
        plan: list[str] = []
        schedule = cfg.width_schedule()
        steps = len(cfg.plan) if cfg.plan else cfg.steps
        for k in range(steps):
            step_started = time.perf_counter()
            if budget_ms is not None and not cfg.plan and current_ratio_to_base * base_ms <= budget_ms:
                # The kept candidate was the one that measured fastest, so its figure leans optimistic:
                # measure it again, independently, before believing the budget is met.
                again = meter.measure([reference, current], cfg.profile_rounds, cfg.profile_iterations, cfg.profile_warmup)
                current_ratio_to_base = again.ratio(1, 0)
                rows[-1]["remeasured_latency_ratio"] = current_ratio_to_base
                if current_ratio_to_base * base_ms <= budget_ms:
                    progress(f"budget {budget_ms:.3f} ms met (remeasured {current_ratio_to_base:.3f}x of the input); stopping")
                    break
                progress(f"remeasured {current_ratio_to_base:.3f}x of the input: budget not met yet; going on")
            # ---- candidates
            actions: list[tuple[str, Any]] = []
            if cfg.plan:
                actions = [parse_action(cfg.plan[k])]
            else:
                if cfg.has_budget:  # the next widths beyond the current one, whatever earlier steps chose
                    actions += [("width", r) for r in [r for r in schedule if r > cum_ratio + 1e-9][: cfg.candidates]]
                else:  # the linear schedule: a rejected step's width is not retried, the next step cuts deeper
                    actions += [("width", r) for r in schedule[k:k + 1] if r > cum_ratio + 1e-9]
                if cfg.depth:
                    scores = block_importance(current, cal_x)
                    if scores:
                        actions.append(("depth", min(scores, key=scores.get)))
            if not actions:
                progress("nothing left to prune within --ratio")
                break
            candidates: list[tuple[str, Any, nn.Module]] = []
            for kind, arg in actions:
                cand = copy.deepcopy(current)
                if kind == "width":
                    prune_width(cand, example, original, arg, multiple, classifier, cfg.importance, (cal_x, cal_y), t_module)
                else:
                    if arg not in dict(cand.named_modules()) or arg not in block_importance(cand, cal_x):
                        raise UserInputError(f"plan step depth:{arg}: no identity-shaped block named {arg!r} in the current model")
                    remove_block(cand, arg)
                recalibrate_batchnorm(cand, cal_x)
                candidates.append((kind, arg, cand))
            progress(f"step {k + 1}: measuring {len(candidates)} candidate(s) next to the current and the input model")
            m = meter.measure([reference, current, *(c for _, _, c in candidates)], cfg.profile_rounds, cfg.profile_iterations, cfg.profile_warmup)
            infos = []
            for i, (kind, arg, cand) in enumerate(candidates):
                size = _size(cand, example)
                infos.append({
                    "action": f"{kind}:{arg:.4f}" if kind == "width" else f"{kind}:{arg}",
                    "latency_ms": m.latency(i + 2) if m.kind == "predicted" else m.ratio(i + 2, 0) * base_ms,
                    "ratio_to_current": m.ratio(i + 2, 1),
                    "ratio_to_input": m.ratio(i + 2, 0),
                    "params": size["params"], "macs": size["macs"], "damage_kl": _damage(current, cand, cal_x),
                })
            cur_to_input = m.ratio(1, 0)
            # ---- choose: reach the step's aim with the least damage, else the fastest
            if cfg.plan:
                chosen = 0
            else:
                if budget_ms is not None:
                    remaining = max(1, steps - k)
                    aim = cur_to_input * (budget_ms / (cur_to_input * base_ms)) ** (1.0 / remaining)
                else:
                    aim = infos[0]["ratio_to_input"]  # the nominal width step
                reaching = [i for i, info in enumerate(infos) if info["ratio_to_input"] <= aim + 1e-12]
                if reaching:
                    chosen = min(reaching, key=lambda i: infos[i]["damage_kl"])
                elif k + 1 < steps:  # steps remain: the best latency gain per unit of damage, not a leap
                    chosen = max(range(len(infos)), key=lambda i: (1.0 - infos[i]["ratio_to_current"]) / (infos[i]["damage_kl"] + 1e-3))
                else:  # the last step: the fastest, the only chance left to meet the budget
                    chosen = min(range(len(infos)), key=lambda i: infos[i]["ratio_to_input"])
            fastest = min(range(len(infos)), key=lambda i: infos[i]["ratio_to_current"])
            if infos[chosen]["ratio_to_current"] > 1.0 - cfg.min_gain and not cfg.plan:
                chosen = fastest  # the aimed-for candidate is not faster: fall back to the one that is, if any
            info = infos[chosen]
            kind, arg, cand = candidates[chosen]
            faster = info["ratio_to_current"] <= 1.0 - cfg.min_gain
            row: dict[str, Any] = {"step": k + 1, "action": info["action"], "accepted": faster or bool(cfg.plan), "candidates": infos,
                                   "latency_kind": m.kind, "current_ratio_to_input": cur_to_input}
            if cfg.plan:
                row["replayed"] = True  # a plan's steps were each measured faster when it was made; replaying keeps them all
            elif not faster:
                row["reason"] = (f"measured latency {info['ratio_to_current']:.3f}x of the current model "
                                 f"(needs <= {1 - cfg.min_gain:.3f}x): smaller but not faster, rejected")
                progress(f"step {k + 1}: {info['action']} rejected ({info['ratio_to_current']:.3f}x the current latency)")
                row["seconds"] = round(time.perf_counter() - step_started, 1)
                rows.append(row)
                continue
            forcing = _forcing_for(current, arg) if kind == "depth" and cfg.teacher_forced else None
            current = cand
            plan.append(info["action"])
            if kind == "width":
                cum_ratio = arg
            else:
                removed.append(arg)
            current_ratio_to_base = info["ratio_to_input"]
            progress(f"step {k + 1}: {info['action']} kept, latency {info['ratio_to_input']:.3f}x of the input "
                     f"(MACs {info['macs'] / base_size['macs']:.3f}x); recovering for {cfg.recover_epochs:g} epoch(s)")
            rec = recover(current, t_module, reference, data, cfg, cfg.recover_epochs, seed=cfg.seed * 1000 + k + 1, train=train,
                          forcing=forcing)
            acc = evaluate_eval(current)
            row.update({
                "params": info["params"], "macs": info["macs"], "macs_ratio": info["macs"] / base_size["macs"],
                "latency_ms": info["latency_ms"], "latency_ratio": info["ratio_to_input"],
                "eval_accuracy": acc["student_accuracy"], "agreement": acc["agreement"], "recovery": rec,
                "teacher_forced": None if forcing is None else {"block": forcing.student_block, "interval": [forcing.first, forcing.last]},
                "seconds": round(time.perf_counter() - step_started, 1),
            })
            rows.append(row)
        # ---- final recovery and the closing interleaved measurement
        progress(f"final recovery: {cfg.final_epochs:g} epoch(s), best epoch picked on the calibration split")
        final_rec = recover(current, t_module, reference, data, cfg, cfg.final_epochs, seed=cfg.seed * 1000, train=train,
                            select_best=True, progress=progress)
        progress("closing measurement: input vs pruned, interleaved")
        closing_meter = meter
        if isinstance(meter, TargetLatency):
            closing_meter = TargetLatency(target, model.input_spec, Path(tmp.name), exporter=cfg.exporter, threads=cfg.profile_threads, cache=False,
                                          stat=cfg.latency_stat)
        closing = closing_meter.measure([reference, current], cfg.final_rounds, cfg.final_iterations, cfg.profile_warmup)
    finally:
        tmp.cleanup()
    final_size = _size(current, example)
    final_acc = evaluate_eval(current)
    final_ms = closing.latency(1)
    result: dict[str, Any] = {
        "input": {"source": model.source, "sha256": model.sha256, **base_size, "eval_accuracy": input_acc["student_accuracy"]},
        "teacher": {"source": teacher.source if teacher is not None else model.source, "eval_accuracy": input_acc["teacher_accuracy"]},
        "pruned": {**final_size, "eval_accuracy": final_acc["student_accuracy"], "agreement": final_acc["agreement"],
                   "removed_blocks": removed, "widths": layer_widths(current)},
        "macs_ratio": final_size["macs"] / base_size["macs"],
        "params_ratio": final_size["params"] / base_size["params"],
        "latency": {
            "kind": closing.kind,
            "input_ms": closing.latency(0), "pruned_ms": final_ms, "ratio": closing.ratio(1, 0),
            "rounds": closing.rounds, "input_stats": closing.stats[0], "pruned_stats": closing.stats[1],
            "statistic": cfg.latency_stat,
            "note": f"median over interleaved rounds of each round's {cfg.latency_stat}; ratio = median of per-round ratios",
        },
        "accuracy_drop_pct_points": None if input_acc["student_accuracy"] is None or final_acc["student_accuracy"] is None
        else 100.0 * (input_acc["student_accuracy"] - final_acc["student_accuracy"]),
        "budget_ms": budget_ms,
        "budget_met": None if budget_ms is None else bool(final_ms <= budget_ms if cfg.latency_budget_ms is not None
                                                          else closing.ratio(1, 0) <= cfg.latency_budget_ratio),
        "steps": rows,
        "plan": plan,
        "final_recovery": final_rec,
        "target": {"name": target.name, "channel_multiple": multiple},
        "config": asdict(cfg),
        "data": data.describe(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return current.cpu().eval(), result


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


def _frozen(module: nn.Module, device: str) -> nn.Module:
    try:
        module.eval()
    except NotImplementedError:  # .pt2 modules keep the mode they were exported in
        pass
    return module.to(device)


class PrunePass(PassBase):
    name: ClassVar[str] = "prune"
    Config: ClassVar[type] = PruneConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = ModelArtifact
    requires: ClassVar[Requires] = Requires(data=True, logits=True)
    placement: ClassVar[Placement] = Placement(before=("quantize",), why="dependency-graph pruning of a fake-quantized model breaks "
                                               "(Torch-Pruning #291); prune the float model, then quantize")
    produces_stage: ClassVar[bool] = True

    def run(self, ctx: Context, inp: ModelArtifact, cfg: PruneConfig) -> ModelArtifact:
        """`inp` is the float model to prune; ctx.teacher (else `inp` itself) gives the logit targets."""
        if ctx.data is None:
            raise UserInputError("pruning needs a dataset (calibration, recovery and evaluation)")
        cfg = replace(cfg, device=ctx.device)
        run_dir = ctx.run_dir / self.name
        ctx.progress(f"pruning toward {'the latency budget' if cfg.has_budget else f'ratio {cfg.ratio}'} on {ctx.target.name}")
        result = prune(inp, ctx.data, ctx.target, cfg, run_dir, teacher=ctx.teacher, progress=ctx.progress)
        ctx.results[self.name] = result
        from squeeze.io.modelio import load_model

        art = load_model(run_dir / MODEL_FILE, arch=None if str(inp.metadata.get("arch", "")).startswith("squeeze.") else inp.metadata.get("arch"))
        art.provenance = [*inp.provenance, {"pass": "prune", "config": asdict(cfg)}]
        return art
