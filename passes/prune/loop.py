"""The pruning loop: measure candidates next to the current and the input model, keep one that is
measurably faster with the least damage, recover it by distillation, until the budget is met."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import UserInputError
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.io.outputs import final_layers
from squeeze.measure.analysis import eval_mode, evaluating
from squeeze.passes.prune.config import PruneConfig, parse_action
from squeeze.passes.prune.latency import LatencyMeter, Measurement, TargetLatency
from squeeze.passes.prune.recovery import EvalSplit, TrainSet, forcing_for, recover
from squeeze.passes.prune.structure import (CALIBRATION_BATCH, block_importance, block_names, check_float_model, layer_widths, output_layer,
                                            prune_width, recalibrate_batchnorm, remove_block, size_of)
from squeeze.targets.base import Target, channel_block
from squeeze.train import losses
from squeeze.train.objective import check_student_fits


@torch.no_grad()
def damage(current: nn.Module, candidate: nn.Module, x: torch.Tensor, logits: bool = True) -> float:
    """KL(current || candidate) on calibration inputs: how much the cut changed the outputs (for outputs that
    are not class logits, the normalised MSE between them)."""
    with evaluating(current), evaluating(candidate):
        if not logits:
            return float(losses.nmse(candidate(x), current(x)))
        return float(F.kl_div(F.log_softmax(candidate(x), 1), F.softmax(current(x), 1), reduction="batchmean"))


def _damage(info: dict[str, Any]) -> float:
    return info["damage_kl"] if "damage_kl" in info else info["damage_nmse"]


def _frozen(module: nn.Module, device: str) -> nn.Module:
    return eval_mode(module).to(device)  # .pt2 modules keep the mode they were exported in


class Pruner:
    """One pruning run's state; `run()` returns (pruned module, result)."""

    def __init__(self, model: ModelArtifact, data: DataBundle, target: Target, cfg: PruneConfig, teacher: ModelArtifact | None,
                 meter: LatencyMeter | None, progress: Callable[[str], None], workdir: Path):
        check_float_model(model)  # the teacher only gives logits: any format will do
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserInputError("--device cuda requested but torch sees no CUDA device")
        torch.manual_seed(cfg.seed)
        self.model, self.data, self.target, self.cfg, self.teacher, self.progress = model, data, target, cfg, teacher, progress
        self.device = device = cfg.device
        self.reference = copy.deepcopy(model.module).eval().to(device)  # the unpruned model: layer-distillation targets
        check_student_fits(model, self.reference, data)
        self.t_module = _frozen(teacher.module, device) if teacher is not None else self.reference
        if teacher is not None:
            check_student_fits(teacher, self.reference, data)
        self.example = model.input_spec.example(batch=1).to(device)
        self.logits = model.output_kind(data) == "logits"  # else a map or values: matched to the teacher's outputs
        # a model whose --output picked one of several: the final layer of every output is kept whole
        self.classifier = final_layers(self.reference, self.example) if model.outputs else output_layer(self.reference, self.example)
        self.original = layer_widths(self.reference)
        self.multiple = channel_block(target, cfg.channel_multiple)
        cal_x, cal_y = data.batch("calibration", CALIBRATION_BATCH)
        self.cal_x, self.cal_y = cal_x.to(device), cal_y.to(device)
        self.train = TrainSet(data, self.t_module, device)
        self.workdir = workdir
        self.meter = meter or TargetLatency(target, model.input_spec, workdir, exporter=cfg.exporter, threads=cfg.profile_threads,
                                            stat=cfg.latency_stat)
        self.current = copy.deepcopy(self.reference)
        self.base_size = size_of(self.reference, self.example)
        self.removed: list[str] = []
        self.plan: list[str] = []
        self.cum_ratio, self.ratio_to_base = 0.0, 1.0
        self.steps = len(cfg.plan) if cfg.plan else cfg.steps

    def measure(self, models: list[nn.Module], rounds: int | None = None, iterations: int | None = None, meter: Any = None) -> Any:
        cfg = self.cfg
        return (meter or self.meter).measure(models, rounds or cfg.profile_rounds, iterations or cfg.profile_iterations, cfg.profile_warmup)

    def start(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        self.progress(f"measuring the input model on {self.target.name}")
        self.base_measurement = self.measure([self.reference])
        self.base_ms = self.base_measurement.latency(0)
        self.budget_ms = cfg.latency_budget_ms if cfg.latency_budget_ms is not None else (
            cfg.latency_budget_ratio * self.base_ms if cfg.latency_budget_ratio is not None else None)
        self.evaluate_eval = EvalSplit(self.data, self.t_module, self.device, self.logits)
        self.input_acc = self.evaluate_eval(self.reference)
        return [{"step": 0, "action": "input", "accepted": True, "params": self.base_size["params"], "macs": self.base_size["macs"],
                 "macs_ratio": 1.0, "latency_ms": self.base_ms, "latency_ratio": 1.0, "eval_accuracy": self.input_acc["student_accuracy"],
                 "agreement": self.input_acc["agreement"], **_fidelity(self.input_acc)}]

    def taylor_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Taylor importance's loss for outputs that are not class logits: CE on per-pixel labels, MSE to regression
        targets, else the normalised MSE to the teacher's outputs."""
        if self.data.targets == "pixel":
            return F.cross_entropy(out, y)
        if self.data.targets == "regression":
            return F.mse_loss(out, y)
        with torch.no_grad():
            t_out = self.t_module(self.cal_x)
        return losses.nmse(out, t_out)

    def budget_met(self, last_row: dict[str, Any]) -> bool:
        """The kept candidate was the one that measured fastest, so its figure leans optimistic:
        measure it again, independently, before believing the budget is met."""
        if self.budget_ms is None or self.cfg.plan or self.ratio_to_base * self.base_ms > self.budget_ms:
            return False
        if not self.plan:  # nothing pruned yet: the input's own measurement is the figure, no need to time it twice
            self.progress(f"nothing to prune: the input already meets the budget ({self.base_ms:.3f} ms <= {self.budget_ms:.3f} ms)")
            return True
        again = self.measure([self.reference, self.current])
        self.ratio_to_base = again.ratio(1, 0)
        last_row["remeasured_latency_ratio"] = self.ratio_to_base
        if self.ratio_to_base * self.base_ms <= self.budget_ms:
            self.progress(f"budget {self.budget_ms:.3f} ms met (remeasured {self.ratio_to_base:.3f}x of the input); stopping")
            return True
        self.progress(f"remeasured {self.ratio_to_base:.3f}x of the input: budget not met yet; going on")
        return False

    def actions(self, k: int) -> list[tuple[str, Any]]:
        cfg = self.cfg
        if cfg.plan:
            return [parse_action(cfg.plan[k])]
        schedule = cfg.width_schedule()
        if cfg.has_budget:  # the next widths beyond the current one, whatever earlier steps chose
            actions = [("width", r) for r in [r for r in schedule if r > self.cum_ratio + 1e-9][: cfg.candidates]]
        else:  # the linear schedule: a rejected step's width is not retried, the next step cuts deeper
            actions = [("width", r) for r in schedule[k:k + 1] if r > self.cum_ratio + 1e-9]
        if cfg.depth:
            scores = block_importance(self.current, self.cal_x)
            if scores:
                actions.append(("depth", min(scores, key=scores.get)))
        return actions

    def candidates(self, actions: list[tuple[str, Any]]) -> list[tuple[str, Any, nn.Module]]:
        out = []
        for kind, arg in actions:
            cand = copy.deepcopy(self.current)
            if kind == "width":
                prune_width(cand, self.example, self.original, arg, self.multiple, self.classifier, self.cfg.importance,
                            (self.cal_x, self.cal_y), self.t_module, loss=None if self.logits else self.taylor_loss)
            else:
                if arg not in dict(cand.named_modules()) or arg not in block_importance(cand, self.cal_x):
                    raise UserInputError(f"plan step depth:{arg}: no identity-shaped block named {arg!r} in the current model")
                remove_block(cand, arg)
            recalibrate_batchnorm(cand, self.cal_x)
            out.append((kind, arg, cand))
        return out

    def score(self, k: int, candidates: list[tuple[str, Any, nn.Module]]) -> tuple[list[dict[str, Any]], Any]:
        self.progress(f"step {k + 1}: measuring {len(candidates)} candidate(s) next to the current and the input model")
        m = self.measure([self.reference, self.current, *(c for _, _, c in candidates)])
        infos = []
        for i, (kind, arg, cand) in enumerate(candidates):
            size = size_of(cand, self.example)
            infos.append({
                "action": f"{kind}:{arg:.4f}" if kind == "width" else f"{kind}:{arg}",
                "latency_ms": m.latency(i + 2) if m.kind == "predicted" else m.ratio(i + 2, 0) * self.base_ms,
                "ratio_to_current": m.ratio(i + 2, 1), "ratio_to_input": m.ratio(i + 2, 0),
                "params": size["params"], "macs": size["macs"],
                "damage_kl" if self.logits else "damage_nmse": damage(self.current, cand, self.cal_x, self.logits),
            })
        return infos, m

    def choose(self, k: int, infos: list[dict[str, Any]], cur_to_input: float) -> int:
        """Reach the step's aim with the least damage, else the best gain per damage, else (last step) the fastest."""
        cfg = self.cfg
        if cfg.plan:
            return 0
        if self.budget_ms is not None:
            remaining = max(1, self.steps - k)
            aim = cur_to_input * (self.budget_ms / (cur_to_input * self.base_ms)) ** (1.0 / remaining)
        else:
            aim = infos[0]["ratio_to_input"]  # the nominal width step
        reaching = [i for i, info in enumerate(infos) if info["ratio_to_input"] <= aim + 1e-12]
        if reaching:
            chosen = min(reaching, key=lambda i: _damage(infos[i]))
        elif k + 1 < self.steps:  # steps remain: the best latency gain per unit of damage, not a leap
            chosen = max(range(len(infos)), key=lambda i: (1.0 - infos[i]["ratio_to_current"]) / (_damage(infos[i]) + 1e-3))
        else:  # the last step: the fastest, the only chance left to meet the budget
            chosen = min(range(len(infos)), key=lambda i: infos[i]["ratio_to_input"])
        if infos[chosen]["ratio_to_current"] > 1.0 - cfg.min_gain:
            chosen = min(range(len(infos)), key=lambda i: infos[i]["ratio_to_current"])  # not faster: fall back to the one that is
        return chosen

    def step(self, k: int) -> dict[str, Any] | None:
        """One prune step; the row for the result, or None when nothing is left to prune."""
        cfg, started = self.cfg, time.perf_counter()
        actions = self.actions(k)
        if not actions:
            self.progress("nothing left to prune within --ratio")
            return None
        candidates = self.candidates(actions)
        infos, m = self.score(k, candidates)
        cur_to_input = m.ratio(1, 0)
        chosen = self.choose(k, infos, cur_to_input)
        info, (kind, arg, cand) = infos[chosen], candidates[chosen]
        faster = info["ratio_to_current"] <= 1.0 - cfg.min_gain
        row: dict[str, Any] = {"step": k + 1, "action": info["action"], "accepted": faster or bool(cfg.plan), "candidates": infos,
                               "latency_kind": m.kind, "current_ratio_to_input": cur_to_input}
        if cfg.plan:
            row["replayed"] = True  # a plan's steps were each measured faster when it was made; replaying keeps them all
        elif not faster:
            row["reason"] = (f"measured latency {info['ratio_to_current']:.3f}x of the current model "
                             f"(needs <= {1 - cfg.min_gain:.3f}x): smaller but not faster, rejected")
            self.progress(f"step {k + 1}: {info['action']} rejected ({info['ratio_to_current']:.3f}x the current latency)")
            return {**row, "seconds": round(time.perf_counter() - started, 1)}
        return self.accept(k, row, info, kind, arg, cand, started)

    def accept(self, k: int, row: dict[str, Any], info: dict[str, Any], kind: str, arg: Any, cand: nn.Module, started: float) -> dict[str, Any]:
        cfg = self.cfg
        forcing = forcing_for(self.current, arg) if kind == "depth" and cfg.teacher_forced else None
        self.current = cand
        self.plan.append(info["action"])
        if kind == "width":
            self.cum_ratio = arg
        else:
            self.removed.append(arg)
        self.ratio_to_base = info["ratio_to_input"]
        self.progress(f"step {k + 1}: {info['action']} kept, latency {info['ratio_to_input']:.3f}x of the input "
                      f"(MACs {info['macs'] / self.base_size['macs']:.3f}x); recovering for {cfg.recover_epochs:g} epoch(s)")
        rec = recover(self.current, self.t_module, self.reference, self.data, cfg, cfg.recover_epochs, seed=cfg.seed * 1000 + k + 1,
                      train=self.train, forcing=forcing, logits=self.logits)
        acc = self.evaluate_eval(self.current)
        row.update({"params": info["params"], "macs": info["macs"], "macs_ratio": info["macs"] / self.base_size["macs"],
                    "latency_ms": info["latency_ms"], "latency_ratio": info["ratio_to_input"], "eval_accuracy": acc["student_accuracy"],
                    "agreement": acc["agreement"], **_fidelity(acc), "recovery": rec,
                    "teacher_forced": None if forcing is None else {"block": forcing.student_block, "interval": [forcing.first, forcing.last]},
                    "seconds": round(time.perf_counter() - started, 1)})
        return row

    def finish(self) -> tuple[dict[str, Any], Any]:
        cfg = self.cfg
        if not self.plan and self.budget_ms is not None and self.base_ms <= self.budget_ms and not cfg.plan:
            # the input already met the budget: it is shipped as it came, with no recovery training and no second
            # timing (prune's output is then its input; the input's measurement stands for both)
            base = self.base_measurement
            closing = Measurement([base.rounds[0], base.rounds[0]], base.kind, [base.stats[0], base.stats[0]] if base.stats else [])
            return {"skipped": f"the input already met the budget ({self.base_ms:.3f} <= {self.budget_ms:.3f} ms): nothing pruned"}, closing
        self.progress(f"final recovery: {cfg.final_epochs:g} epoch(s), best epoch picked on the calibration split")
        final_rec = recover(self.current, self.t_module, self.reference, self.data, cfg, cfg.final_epochs, seed=cfg.seed * 1000,
                            train=self.train, select_best=True, progress=self.progress, logits=self.logits)
        self.progress("closing measurement: input vs pruned, interleaved")
        closing_meter = self.meter
        if isinstance(self.meter, TargetLatency):
            closing_meter = TargetLatency(self.target, self.model.input_spec, self.workdir, exporter=cfg.exporter,
                                          threads=cfg.profile_threads, cache=False, stat=cfg.latency_stat)
        closing = self.measure([self.reference, self.current], cfg.final_rounds, cfg.final_iterations, meter=closing_meter)
        return final_rec, closing

    def distillation(self, rows: list[dict[str, Any]], final_rec: dict[str, Any]) -> dict[str, Any]:
        """What recovery trained on, and its mean loss terms per batch, per step and in the final recovery."""
        cfg = self.cfg
        labels = self.data.has_labels if self.logits else self.data.targets == "pixel"
        main = "kd" if self.logits else "output"
        layer = cfg.layer_distill and bool(block_names(self.reference))  # blocks: composite items of an nn.Sequential
        terms = {main: cfg.alpha if labels else 1.0, **({"ce": 1.0 - cfg.alpha} if labels else {}),
                 **({"layer": cfg.feature_weight} if layer else {})}
        terms = {k: round(v, 6) for k, v in terms.items() if v > 0}
        # recovery sums weighted terms; reported as computed (like QAT's), next to their weights
        means = lambda rec: {k[5:]: v / terms.get(k[5:], 1.0) for k, v in rec.items() if k.startswith("mean_")}  # noqa: E731
        return {"objective": (f"logit KD (T={cfg.temperature:g})" if self.logits else "output matching: normalised MSE to the teacher's outputs")
                + (" + CE on labels" if labels else "") + (" + per-block normalised MSE to the unpruned model" if layer else ""),
                "weights": terms,
                "steps": [{"step": r["step"], **means(r["recovery"])} for r in rows if r.get("recovery")],
                "final_recovery": means(final_rec)}

    def result(self, rows: list[dict[str, Any]], final_rec: dict[str, Any], closing: Any, seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        final_size, final_acc, final_ms = size_of(self.current, self.example), self.evaluate_eval(self.current), closing.latency(1)
        input_acc, budget_ms = self.input_acc, self.budget_ms
        return {
            "input": {"source": self.model.source, "sha256": self.model.sha256, **self.base_size, "eval_accuracy": input_acc["student_accuracy"]},
            "teacher": {"source": self.teacher.source if self.teacher is not None else self.model.source,
                        "eval_accuracy": input_acc["teacher_accuracy"]},
            "pruned": {**final_size, "eval_accuracy": final_acc["student_accuracy"], "agreement": final_acc["agreement"],
                       **_fidelity(final_acc), "removed_blocks": self.removed, "widths": layer_widths(self.current)},
            "macs_ratio": final_size["macs"] / self.base_size["macs"],
            "params_ratio": final_size["params"] / self.base_size["params"],
            "latency": {"kind": closing.kind, "input_ms": closing.latency(0), "pruned_ms": final_ms, "ratio": closing.ratio(1, 0),
                        "rounds": closing.rounds, "input_stats": closing.stats[0], "pruned_stats": closing.stats[1], "statistic": cfg.latency_stat,
                        "note": f"median over interleaved rounds of each round's {cfg.latency_stat}; ratio = median of per-round ratios"},
            "accuracy_drop_pct_points": None if input_acc["student_accuracy"] is None or final_acc["student_accuracy"] is None
            else 100.0 * (input_acc["student_accuracy"] - final_acc["student_accuracy"]),
            "budget_ms": budget_ms,
            "budget_met": None if budget_ms is None else bool(final_ms <= budget_ms if cfg.latency_budget_ms is not None
                                                              else closing.ratio(1, 0) <= cfg.latency_budget_ratio),
            "steps": rows, "plan": self.plan, "final_recovery": final_rec, "distillation": self.distillation(rows, final_rec),
            "target": {"name": self.target.name, "channel_multiple": self.multiple},
            "config": asdict(cfg), "data": self.data.describe(), "seconds": round(seconds, 1),
        }


def _fidelity(ev: dict[str, Any]) -> dict[str, Any]:
    return {"output_nmse": ev["output_nmse"]} if "output_nmse" in ev else {}


def prune_model(model: ModelArtifact, data: DataBundle, target: Target, cfg: PruneConfig, *, teacher: ModelArtifact | None = None,
                meter: LatencyMeter | None = None, progress: Callable[[str], None] = lambda message: None) -> tuple[nn.Module, dict[str, Any]]:
    """Prune `model` toward the latency budget; returns the pruned module and the per-step record. Writes no files."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="squeeze-prune-") as tmp:
        pruner = Pruner(model, data, target, cfg, teacher, meter, progress, Path(tmp))
        rows = pruner.start()
        for k in range(pruner.steps):
            if pruner.budget_met(rows[-1]):
                break
            row = pruner.step(k)
            if row is None:
                break
            rows.append(row)
        final_rec, closing = pruner.finish()
    result = pruner.result(rows, final_rec, closing, time.perf_counter() - started)
    return pruner.current.cpu().eval(), result
