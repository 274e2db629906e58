"""Search pass: pick an untrained student for the teacher with a training-free proxy, under budgets.

Input: the teacher (ModelArtifact). Output: the chosen student, freshly initialised from the
seed exactly as `squeeze distill --student student.json --seed S` would build it, with its spec
in the metadata, so the distill pass can follow in the pipeline.

Cost rules (issue 3): one fixed real batch (calibration split by default, never eval) for every
candidate; the teacher's side computed once; no optimizer; each candidate built, scored and
dropped; scoring in deterministic mode from a per-candidate seed (so a score depends on the
architecture and the seed, not on when it was evaluated). Cheap checks (params, MACs) run before
latency, latency before the proxy.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from squeeze.measure.analysis import count_macs, count_params
from squeeze.io.artifacts import ModelArtifact
from squeeze.io.data import DataBundle
from squeeze.errors import UserInputError
from squeeze.io.fsutil import write_bytes_atomic, write_json_atomic
from squeeze.options import cli
from squeeze.passes.base import Context, PassBase, Placement, Requires
from squeeze.passes.search import fewshot, proxies
from squeeze.passes.search.inputs import candidate_seed, fixed_batch, proxy_inputs, teacher_classes  # noqa: F401 (bench/tests import them here)
from squeeze.passes.search.evolution import (Candidate, EvolutionConfig, Event, best_candidates, candidate_row, event_row, evolve,
                                              progress_events)
from squeeze.passes.search.latency import METRICS, LatencyOracle, default_cache_path
from squeeze.passes.search.latency_model import SOURCES, ModelledLatencyOracle, measure_shortlist, modelled_oracle
from squeeze.passes.search.spaces import SearchSpace, get_space
from squeeze.targets.base import ProfileSpec, Target, channel_block

PROXY_SPLITS = ("calibration", "train")


@dataclass(frozen=True)
class SearchConfig:
    space: str = "resnet"  # built-in name or pkg.mod:space
    # the default ranker is the one with the lowest within-budget regret on the benchmark pools (bench/RESULTS.md,
    # "Student search"): the params top-8 re-ranked by a short distillation; DisWOT and the other proxies stay selectable
    proxy: str = "params"
    latency_budget_ms: float | None = None
    latency_metric: str = "p50"  # which statistic the budget bounds (p50 is robust on a shared machine; p90 = compress's gate)
    params_budget: int | None = None  # None: the teacher's parameter count (a student is never larger than its teacher)
    macs_budget: int | None = None  # None: the teacher's MACs
    population: int = 24
    iterations: int = 96
    tournament: int = 6
    crossover: float = 0.3
    seed: int = 0
    teacher_init: str = "trained"  # or "random": the paper's random-init teacher
    batch_size: int = field(default=64, metadata=cli(flags=("-b",), help="the one fixed proxy batch (from the calibration split)"))
    proxy_split: str = "calibration"
    temperature: float = 4.0  # of the semantic term's CE: the distillation temperature
    top_k: int = 10
    # the few-shot tier: the zero-cost top-k re-ranked by a short distillation each (passes/search/fewshot.py); 0 = off
    fewshot_top: int = 8
    fewshot_steps: int = 0  # optimizer steps of that short distillation per candidate; 0 = 5 % of a 15-epoch distillation (50-200)
    fewshot_rank_by: str = "accuracy"  # accuracy (calibration, after the short run) or sotl (its late training loss, lower first)
    profile_warmup: int = 5  # per-candidate latency: short runs; the chosen student is re-measured with the full spec
    profile_iterations: int = 40
    profile_threads: int | None = None  # None: each candidate at its fastest thread count (what compress ships); N pins it
    latency_cache: str = ""  # "" = ~/.cache/squeeze/latency.json (SQUEEZE_CACHE_DIR / XDG_CACHE_HOME respected)
    # model: fitted once per machine on 16 students of the space, stored beside the latency cache (passes/search/latency_model.py)
    latency_source: str = "measure"  # measure: time each candidate; model (cpu): predict each with this machine's latency model, measure the top-k
    # in a recipe with a prune pass after search: aim at this many times the budget (prune then cuts to it; Minitron's
    # recipe). 1.0 = a student born at the budget (prune has nothing left to do): better when prune's recovery is short
    headroom_before_prune: float = 2.0
    channel_multiple: int | None = None  # widths in whole blocks of this many channels (default: the target's; cpu: 16 with AVX-512, else 8)
    use_latency_cache: bool = field(default=True, metadata=cli(names=("--use-latency-cache/--no-latency-cache",), help="reuse cached candidate latencies (--no-latency-cache: measure every one afresh)"))

    def __post_init__(self) -> None:
        proxies.check_proxy(self.proxy)
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UserInputError("--latency-budget must be > 0")
        if self.latency_source not in SOURCES:
            raise UserInputError(f"--latency-source must be one of {', '.join(SOURCES)}, got {self.latency_source!r}")
        if self.latency_metric not in METRICS:
            raise UserInputError(f"--latency-metric must be one of {', '.join(METRICS)}, got {self.latency_metric!r}")
        if (self.params_budget is not None and self.params_budget < 1) or (self.macs_budget is not None and self.macs_budget < 1):
            raise UserInputError("--params-budget and --macs-budget must be >= 1")
        if self.teacher_init not in proxies.TEACHER_INITS:
            raise UserInputError(f"--teacher-init must be one of {', '.join(proxies.TEACHER_INITS)}, got {self.teacher_init!r}")
        if self.proxy_split not in PROXY_SPLITS:
            raise UserInputError(f"the proxy batch comes from {' or '.join(PROXY_SPLITS)}, never eval; got {self.proxy_split!r}")
        if self.channel_multiple is not None and self.channel_multiple < 1:
            raise UserInputError(f"--channel-multiple must be >= 1, got {self.channel_multiple}")
        if self.headroom_before_prune < 1.0:
            raise UserInputError(f"headroom_before_prune must be >= 1 (a multiple of the budget), got {self.headroom_before_prune}")
        if self.batch_size < 2 or self.top_k < 1 or self.temperature <= 0:
            raise UserInputError("--batch-size must be >= 2, --top-k >= 1 and the temperature > 0")
        if self.fewshot_top < 0 or self.fewshot_steps < 0:
            raise UserInputError("fewshot_top and fewshot_steps must be >= 0 (steps 0: scaled with the data)")
        if self.fewshot_rank_by not in fewshot.RANK_BY:
            raise UserInputError(f"fewshot_rank_by must be one of {', '.join(fewshot.RANK_BY)}, got {self.fewshot_rank_by!r}")
        if self.profile_iterations < 2 or self.profile_warmup < 0:
            raise UserInputError("--profile-iterations must be >= 2 and warm-up >= 0")
        self.evolution()  # validates population / tournament / crossover

    def evolution(self) -> EvolutionConfig:
        return EvolutionConfig(self.population, self.iterations, min(self.tournament, self.population), self.crossover, self.seed)


@dataclass
class SearchOutcome:
    space: SearchSpace
    best: Candidate
    top: list[Candidate]
    events: list[Event]
    result: dict[str, Any]
    in_channels: int
    num_classes: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def build_student(self, seed: int) -> torch.nn.Module:
        """The chosen student, initialised as `squeeze distill --seed SEED` initialises a student spec."""
        torch.manual_seed(seed)
        return self.space.build(self.best.genome, self.in_channels, self.num_classes)


class _Evaluator:
    """Scores one candidate: size caps, then the latency budget on the target, then the proxy; memoised by architecture."""

    def __init__(self, space: SearchSpace, cfg: SearchConfig, inputs: Any, oracle: LatencyOracle | None, in_channels: int, num_classes: int,
                 example: torch.Tensor, params_cap: int, macs_cap: int):
        self.space, self.cfg, self.inputs, self.oracle = space, cfg, inputs, oracle
        self.in_channels, self.num_classes, self.example, self.params_cap, self.macs_cap = in_channels, num_classes, example, params_cap, macs_cap
        self.metric_key = f"{cfg.latency_metric}_ms"
        self.memo: dict[str, Candidate] = {}

    def _reason(self, params: int, macs: int, spec: dict[str, Any], module: nn.Module, metrics: dict[str, Any]) -> str:
        cfg = self.cfg
        if params > self.params_cap:
            return f"params {params} > {'budget' if cfg.params_budget is not None else 'the teacher'} {self.params_cap}"
        if macs > self.macs_cap:
            return f"MACs {macs} > {'budget' if cfg.macs_budget is not None else 'the teacher'} {self.macs_cap}"
        if cfg.latency_budget_ms is not None and self.oracle is not None:
            lat = self.oracle.latency(spec, module)
            metrics["latency"] = _latency_summary(lat)
            if lat[self.metric_key] > cfg.latency_budget_ms:
                return f"latency {cfg.latency_metric} {lat[self.metric_key]:.3f} ms > budget {cfg.latency_budget_ms:.3f} ms"
        return ""

    def __call__(self, genome: dict[str, Any]) -> Candidate:
        key = self.space.key(genome)
        if key in self.memo:
            return self.memo[key]
        spec = self.space.spec(genome)
        t0 = time.perf_counter()
        torch.manual_seed(candidate_seed(self.cfg.seed, key))
        with proxies.one_thread():
            module = self.space.build(genome, self.in_channels, self.num_classes)
            params, macs = count_params(module), count_macs(module, self.example)
        metrics: dict[str, Any] = {"params": params, "macs": macs}
        reason = self._reason(params, macs, spec, module, metrics)
        cand = Candidate(key, dict(genome), spec, feasible=not reason, reason=reason, metrics=metrics)
        if not reason:
            p0 = time.perf_counter()
            cand.score, terms = proxies.score(self.cfg.proxy, module, self.inputs)
            metrics["terms"] = terms
            metrics["proxy_seconds"] = time.perf_counter() - p0
        metrics["seconds"] = time.perf_counter() - t0
        del module  # nothing else holds it: released before the next candidate
        self.memo[key] = cand
        return cand


def search(teacher: ModelArtifact, data: DataBundle | None, target: Target, cfg: SearchConfig, *,
           progress: Callable[[str], None] = lambda m: None,
           on_event: Callable[[Event, Candidate | None], None] | None = None) -> SearchOutcome:
    started = time.perf_counter()
    space = get_space(cfg.space).aligned(channel_block(target, cfg.channel_multiple))
    num_classes = teacher_classes(teacher, cfg.proxy)
    in_channels = int(teacher.input_spec.shape[1])
    input_shape = (1, *teacher.input_spec.shape[1:])
    timings: dict[str, float] = {}
    inputs, batch_info = proxy_inputs(teacher, data, cfg, num_classes, input_shape, timings, progress)
    teacher_size = {"params": count_params(teacher.module), "macs": count_macs(teacher.module, teacher.input_spec.example(batch=1))}
    params_cap = cfg.params_budget if cfg.params_budget is not None else teacher_size["params"]
    macs_cap = cfg.macs_budget if cfg.macs_budget is not None else teacher_size["macs"]
    cache_path = (Path(cfg.latency_cache).expanduser() if cfg.latency_cache else default_cache_path()) if cfg.use_latency_cache else None
    oracle: LatencyOracle | None = None
    latency_note = ""
    try:
        spec = ProfileSpec(warmup=cfg.profile_warmup, iterations=cfg.profile_iterations, threads=cfg.profile_threads)
        if cfg.latency_source == "model" and cfg.latency_budget_ms is not None:
            oracle = modelled_oracle(target, space, teacher.input_spec, spec, cache_path, in_channels, num_classes, cfg.seed, progress)
        else:
            oracle = LatencyOracle(target, teacher.input_spec, spec, cache_path)
    except UserInputError as exc:
        if cfg.latency_budget_ms is not None:
            raise
        latency_note = str(exc)
    evaluate = _Evaluator(space, cfg, inputs, oracle, in_channels, num_classes, torch.zeros(input_shape), params_cap, macs_cap)
    # an impossible budget is one clear line, decided by the smallest architecture
    smallest_genome = space.smallest()
    progress(f"checking the smallest architecture of space {space.name} against the budgets")
    smallest = evaluate(smallest_genome)
    if not smallest.feasible:
        raise UserInputError(_impossible(cfg, space, target, smallest, evaluate.metric_key))
    progress(f"searching space {space.name} with proxy {cfg.proxy}: population {cfg.population}, {cfg.iterations} iterations")
    t0 = time.perf_counter()
    events = evolve(space, evaluate, cfg.evolution(), first=[smallest_genome], on_event=on_event or progress_events(cfg.iterations, cfg.proxy, progress))
    timings["evolution_s"] = time.perf_counter() - t0
    top = best_candidates(events, max(cfg.top_k, cfg.fewshot_top))
    fewshot_info = None
    if cfg.fewshot_top > 0:
        if data is None:  # it distils each shortlisted candidate on the data: without any, the zero-cost order stands
            fewshot_info = {"skipped": "no --data: the few-shot tier needs training images"}
            progress(f"few-shot tier skipped (no --data): the {cfg.proxy} order stands")
        else:
            steps = cfg.fewshot_steps or fewshot.auto_steps(len(data.train))
            fewshot_info = fewshot.rerank(top, space, teacher.module, data, cfg.fewshot_top, steps, cfg.seed, in_channels,
                                          num_classes, progress, cfg.fewshot_rank_by)
            timings["fewshot_s"] = fewshot_info["seconds"]
    top = top[:cfg.top_k]  # the few-shot shortlist may be longer than the top-k the user asked to see
    top, final_latency = _measure_top(top, space, oracle, target, teacher, cfg, cache_path, in_channels, num_classes, progress)
    timings["total_s"] = time.perf_counter() - started
    latency_kind = "measured" if oracle is not None and oracle.measured else ("predicted" if oracle is not None else f"not available: {latency_note}")
    if isinstance(oracle, ModelledLatencyOracle):
        latency_kind = "predicted by the cpu latency model; the top-k measured"
    result = _result(cfg, space, teacher, teacher_size, data, target, latency_kind, events, top, final_latency, params_cap, macs_cap,
                     batch_info, timings, oracle, num_classes)
    result["fewshot"] = fewshot_info
    return SearchOutcome(space, top[0], top, events, result, in_channels, num_classes, [event_row(e) for e in events])


def _measure_top(top: list[Candidate], space: SearchSpace, oracle: LatencyOracle | None, target: Target, teacher: ModelArtifact,
                 cfg: SearchConfig, cache_path: Path | None, in_channels: int, num_classes: int,
                 progress) -> tuple[list[Candidate], dict[str, Any] | None]:
    """Latency of the top-k (short runs) and of the chosen student (the full profile spec). Predicted top-k are
    measured, and the first measured within the budget becomes the chosen student."""
    if oracle is None:
        return top, None
    progress(f"measuring the top {len(top)} on {target.name}")

    def build(cand: Candidate) -> nn.Module:
        torch.manual_seed(candidate_seed(cfg.seed, cand.key))
        return space.build(cand.genome, in_channels, num_classes)

    if isinstance(oracle, ModelledLatencyOracle):
        short = LatencyOracle(target, teacher.input_spec, oracle.profile_spec, cache_path)
        top = measure_shortlist(top, lambda c: _latency_summary(short.latency(c.spec, build(c))), cfg.latency_budget_ms,
                                f"{cfg.latency_metric}_ms", progress)
    for cand in top:
        if "latency" not in cand.metrics:
            cand.metrics["latency"] = _latency_summary(oracle.latency(cand.spec, build(cand)))
    final_oracle = LatencyOracle(target, teacher.input_spec, ProfileSpec(threads=cfg.profile_threads), cache_path)
    torch.manual_seed(cfg.seed)
    final = final_oracle.latency(top[0].spec, space.build(top[0].genome, in_channels, num_classes))
    final["kind"] = "measured" if final["measured"] else "predicted"
    return top, final


def _result(cfg: SearchConfig, space: SearchSpace, teacher: ModelArtifact, teacher_size: dict[str, int], data: DataBundle | None,
            target: Target, latency_kind: str, events: list[Event], top: list[Candidate], final_latency: dict[str, Any] | None,
            params_cap: int, macs_cap: int, batch_info: dict[str, Any], timings: dict[str, float], oracle: LatencyOracle | None,
            num_classes: int) -> dict[str, Any]:
    best, metric_key = top[0], f"{cfg.latency_metric}_ms"
    scored = [e.candidate.metrics["proxy_seconds"] for e in events if not e.repeat and "proxy_seconds" in e.candidate.metrics]
    unique = {e.candidate.key: e.candidate for e in events}
    rejected: dict[str, int] = {}
    for cand in unique.values():
        if not cand.feasible:
            kind = cand.reason.split(" ", 1)[0]
            rejected[kind] = rejected.get(kind, 0) + 1
    within = {"params": best.metrics["params"] <= params_cap, "macs": best.metrics["macs"] <= macs_cap}
    if cfg.latency_budget_ms is not None:
        within["latency_search"] = best.metrics["latency"][metric_key] <= cfg.latency_budget_ms
        within["latency_final"] = final_latency[metric_key] <= cfg.latency_budget_ms if final_latency else None
    return {
        "student": {"spec": best.spec, "score": best.score, "terms": best.metrics.get("terms", {}), "params": best.metrics["params"],
                    "macs": best.metrics["macs"], "latency_search": best.metrics.get("latency"), "latency": final_latency},
        "within_budget": within,
        "budgets": {"latency_ms": cfg.latency_budget_ms, "latency_metric": cfg.latency_metric,
                    "params": params_cap, "params_from": "budget" if cfg.params_budget is not None else "teacher",
                    "macs": macs_cap, "macs_from": "budget" if cfg.macs_budget is not None else "teacher"},
        "proxy": {"name": cfg.proxy, "higher_is_better": True, "teacher_init": cfg.teacher_init, "semantic_temperature": cfg.temperature,
                  "batch": batch_info},
        "top_k": [candidate_row(i + 1, c) for i, c in enumerate(top)],
        # every feasible candidate scored (the report plots score vs latency) and the chosen one
        "candidates": [{"score": c.score, "latency_ms": (c.metrics.get("latency") or {}).get(metric_key), "params": c.metrics["params"],
                        "macs": c.metrics["macs"]} for c in unique.values() if c.feasible and c.score is not None],
        "chosen": {"score": best.score, "latency_ms": (best.metrics.get("latency") or {}).get(metric_key)},
        "space": space.describe(),
        "teacher": {**teacher.describe(), **teacher_size, "classes": num_classes},
        "data": data.describe() if data is not None else None,
        "target": {"name": target.name, "latency": latency_kind, "channel_multiple": space.channel_multiple},
        "search": {"proposals": len(events), "unique_candidates": len(unique), "feasible": sum(c.feasible for c in unique.values()),
                   "rejected": rejected, "repeats": sum(e.repeat for e in events)},
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "proxy_seconds_per_candidate_median": round(statistics.median(scored), 5) if scored else None,
                    "proxy_seconds_total": round(sum(scored), 3)},
        "latency_cache": oracle.stats() if oracle is not None else None,
        "config": asdict(cfg),
    }


def _latency_summary(lat: dict[str, Any]) -> dict[str, Any]:
    return {"p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "mean_ms": lat["mean_ms"], "measured": lat["measured"],
            "kind": "measured" if lat["measured"] else "predicted", "cached": lat.get("cached", False)}


def _impossible(cfg: SearchConfig, space: SearchSpace, target: Target, smallest: Candidate, metric_key: str) -> str:
    m = smallest.metrics
    arch = json.dumps(smallest.spec["kwargs"], separators=(",", ":"))
    blocks = f" (widths in blocks of {space.channel_multiple} channels)" if space.channel_multiple > 1 else ""
    if smallest.reason.startswith("params"):
        what = f"--params-budget {cfg.params_budget}" if cfg.params_budget is not None else f"the teacher's {smallest.reason.split()[-1]} parameters"
        return f"{what} is impossible in space {space.name}{blocks}: its smallest architecture has {m['params']} parameters ({arch})"
    if smallest.reason.startswith("MACs"):
        what = f"--macs-budget {cfg.macs_budget}" if cfg.macs_budget is not None else f"the teacher's {smallest.reason.split()[-1]} MACs"
        return f"{what} is impossible in space {space.name}{blocks}: its smallest architecture needs {m['macs']} MACs ({arch})"
    lat = m["latency"]
    kind = "measured" if lat["measured"] else "predicted"
    return (f"latency budget {cfg.latency_budget_ms:g} ms ({cfg.latency_metric}) is impossible in space {space.name}{blocks} on {target.name}: "
            f"the smallest latency in the space is {lat[metric_key]:.3f} ms {cfg.latency_metric} ({kind}, its smallest architecture {arch})")


def write_outputs(outcome: SearchOutcome, out_dir: Path) -> None:
    """student.json (the spec distill/compress take), result.json, history.jsonl (one line per evaluation)."""
    write_json_atomic(out_dir / "student.json", outcome.best.spec)
    write_json_atomic(out_dir / "result.json", outcome.result)
    write_bytes_atomic(out_dir / "history.jsonl", "".join(json.dumps(row) + "\n" for row in outcome.history).encode())


SEARCH_HEADROOM = SearchConfig.headroom_before_prune  # the default: with prune after it, search may pick a student this much slower


class SearchPass(PassBase):
    name: ClassVar[str] = "search"
    Config: ClassVar[type] = SearchConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = ModelArtifact
    requires: ClassVar[Requires] = Requires(data=True, logits=True)
    placement: ClassVar[Placement] = Placement(first=True, why="it picks the student every later pass works on")
    produces_stage: ClassVar[bool] = True
    chooses_student: ClassVar[bool] = True

    def check(self, cfg: SearchConfig, ctx: Context) -> None:
        get_space(cfg.space)
        problem = proxies.teacher_form_problem(ctx.teacher.module, cfg.teacher_init) if ctx.teacher is not None else None
        if problem and cfg.proxy in proxies.NEEDS_TEACHER:
            raise UserInputError(problem)

    def aim(self, cfg: SearchConfig, latency_ms: float, later: tuple[str, ...] = ()) -> SearchConfig:
        """A larger student, distilled and then pruned to the budget with layer distillation, has more to
        keep than a student born at the budget (Minitron's recipe; methods.md §6): with a prune pass
        after it, search aims at cfg.headroom_before_prune (default SEARCH_HEADROOM) x the budget."""
        return super().aim(cfg, latency_ms * (cfg.headroom_before_prune if "prune" in later else 1.0), later)

    def planned_work(self, cfg: SearchConfig, ctx: Context) -> tuple[int, int]:
        """The few-shot tier's short distillations (evolution itself trains nothing)."""
        if ctx.data is None or cfg.fewshot_top == 0:
            return 0, 0
        steps = cfg.fewshot_steps or fewshot.auto_steps(len(ctx.data.train))
        return cfg.fewshot_top * steps * fewshot.FewShotConfig().batch_size, cfg.fewshot_top

    def run(self, ctx: Context, inp: ModelArtifact, cfg: SearchConfig) -> ModelArtifact:
        """`inp` is the teacher; returns the chosen student, untrained, with its spec in the metadata."""
        outcome = search(inp, ctx.data, ctx.target, cfg, progress=ctx.progress)
        run_dir = ctx.run_dir / self.name
        run_dir.mkdir(parents=True, exist_ok=True)
        write_outputs(outcome, run_dir)
        ctx.results[self.name] = outcome.result
        spec = outcome.best.spec
        return ModelArtifact(outcome.build_student(cfg.seed), inp.input_spec, str(run_dir / "student.json"), "student-spec", "",
                             {"arch": spec["arch"], "arch_kwargs": spec["kwargs"],
                              "search": {k: outcome.result[k] for k in ("student", "budgets", "proxy")}},
                             [*inp.provenance, {"pass": self.name, "config": asdict(cfg)}])
