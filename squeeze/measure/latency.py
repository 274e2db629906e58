"""The one latency measurer: every decision that compares latencies (a derived budget, search,
prune, INT8 vs float, compress's closing rounds, the gate's ratio mode) goes through `compare`.

Models are timed in interleaved rounds (each round one block of runs per model; the order turns
every round and reverses every other, so for two models it reads A B B A A B ...), which makes a
slow drift or a neighbour's burst hit all of them alike. Each round gives every model one
statistic (its block's p50, by default) and, against the reference, one paired ratio; the
estimate is the median over rounds and its 95 % interval a seeded bootstrap of that median.
Rounds go on until every interval is tight (half-width within `ci` of its ratio) or a time cap
hits. The host's load is sampled over the whole measurement: how busy the other processes kept
the CPU, the load average, CPU steal. An oversubscribed host or a wide interval marks the result
noisy, and the callers say so (and refuse to derive a budget from it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from squeeze.errors import UserInputError

STATISTICS = ("p50", "p90", "p99", "min", "mean")
OVERSUBSCRIBED_SHARE = 0.25  # other processes kept a quarter of the machine's CPU time busy
NOISY_COV = 0.15  # per-round statistics of one model scatter more than this


@dataclass(frozen=True)
class MeasureConfig:
    block_iterations: int = 50  # timed runs per model per round
    warmup: int = 5  # untimed runs before each block
    min_rounds: int = 5
    max_rounds: int = 40
    ci: float = 0.03  # stop once every ratio's 95 % CI half-width is within this fraction of it
    time_cap_s: float = 60.0
    statistic: str = "p50"  # the per-round figure compared: p50, p90, min or mean of the block
    batch_size: int = 1
    threads: int | None = None  # intra-op threads; None = the target's default (or tuned)
    tune: str = "off"  # off; threads (time each model at every thread count); full (also the target's other runtime knobs)
    choose_by: str | None = None  # the statistic tuning picks a model's settings by (the gated one); None = `statistic`

    def __post_init__(self) -> None:
        if self.block_iterations < 2 or self.warmup < 0 or self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise UserInputError("latency measurement needs >= 2 runs per block, >= 1 round and max_rounds >= min_rounds")
        if not 0 < self.ci < 1 or self.time_cap_s <= 0:
            raise UserInputError("latency measurement needs 0 < ci < 1 and a positive time cap")
        if self.statistic not in STATISTICS:
            raise UserInputError(f"latency statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.choose_by is not None and self.choose_by not in STATISTICS:
            raise UserInputError(f"choose_by must be one of {', '.join(STATISTICS)}, got {self.choose_by!r}")
        if self.tune not in ("off", "threads", "full"):
            raise UserInputError(f"tune must be off, threads or full, got {self.tune!r}")

    def spec(self) -> Any:
        from squeeze.targets.base import ProfileSpec

        return ProfileSpec(batch_size=self.batch_size, warmup=self.warmup, iterations=self.block_iterations, threads=self.threads)


# ----------------------------------------------------------------------------------------------
# Host load


def _our_cpus() -> set[int] | None:
    """The CPUs this process may run on, or None when that is all of them (or unknown)."""
    try:
        ours = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return None
    return None if len(ours) >= (os.cpu_count() or 1) else set(ours)


def _cpu_times(cpus: set[int] | None = None) -> tuple[float, float, float]:
    """(busy, total, steal) jiffies since boot of `cpus` (None: all CPUs), from /proc/stat (zeros where unreadable).
    A process pinned to some cores (taskset, a CI job's cpuset) is slowed by what runs on those, not by a
    neighbour busy on the others."""
    try:
        with open("/proc/stat") as fh:
            lines = [line.split() for line in fh if line.startswith("cpu")]
        rows = [lines[0][1:]] if cpus is None else [ln[1:] for ln in lines[1:] if int(ln[0][3:]) in cpus]
        per_cpu = [[float(v) for v in row] for row in rows]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0, 0.0
    busy = total = steal = 0.0
    for fields in per_cpu:
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        cpu_steal = fields[7] if len(fields) > 7 else 0.0
        cpu_total = sum(fields[:8])
        busy, total, steal = busy + cpu_total - idle - cpu_steal, total + cpu_total, steal + cpu_steal
    return busy, total, steal


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class HostLoad:
    """How busy the machine was, besides us, while we measured."""

    cores: int
    load_average: float
    others_busy_share: float  # of the CPU capacity we may run on (all cores, or those we are pinned to), taken by others
    steal_share: float
    seconds: float
    oversubscribed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadSampler:
    def __init__(self) -> None:
        self.cpus = _our_cpus()
        self.start_cpu, self.start_own, self.start_wall = _cpu_times(self.cpus), _own_cpu_seconds(), time.monotonic()

    def finish(self) -> HostLoad:
        busy0, total0, steal0 = self.start_cpu
        busy1, total1, steal1 = _cpu_times(self.cpus)
        cores = len(self.cpus) if self.cpus is not None else os.cpu_count() or 1
        wall = max(time.monotonic() - self.start_wall, 1e-6)
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        capacity = max((total1 - total0) / hz, wall * cores, 1e-6)
        others = max(0.0, (busy1 - busy0) / hz - (_own_cpu_seconds() - self.start_own)) / capacity
        steal = max(0.0, (steal1 - steal0) / hz) / capacity
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        # the load average is recorded, not decisive: its minute-long memory counts our own threads from the stage
        # before (a distillation's), which flagged quiet hosts; others' share is measured over this very window
        oversubscribed = others > OVERSUBSCRIBED_SHARE or steal > 0.1
        return HostLoad(cores, round(load, 2), round(others, 3), round(steal, 3), round(wall, 2), bool(oversubscribed))


def host_load_now(seconds: float = 0.5) -> HostLoad:
    """The load over a short idle window (nothing of ours runs): what a run is about to measure in."""
    sampler = LoadSampler()
    time.sleep(seconds)
    return sampler.finish()


# ----------------------------------------------------------------------------------------------
# Interleaved comparison


def bootstrap_median_ci(values: Any, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, len(values), size=(resamples, len(values)))], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def round_order(names: list[Any], r: int) -> list[Any]:
    """Round r's order: rotated by r and reversed on odd rounds (A B, B A, A B ... for two models)."""
    k = r % len(names)
    order = names[k:] + names[:k] if len(names) > 2 else list(names)
    return order[::-1] if r % 2 else order


@dataclass
class Comparison:
    """Latencies of several models measured in the same interleaved rounds."""

    kind: str  # measured | predicted
    statistic: str
    stats: dict[str, dict[str, Any]]  # name -> LatencyStats dict, each figure the median over rounds of that round's value
    per_round: dict[str, list[float]]  # name -> the per-round statistic, in ms
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ratio to the reference, 95 % CI, tight
    reference: str | None = None
    rounds: int = 1
    seconds: float = 0.0
    stopped: str = "predicted"  # tight | time cap | max rounds | predicted
    load: dict[str, Any] | None = None
    noisy: bool = False
    why_noisy: list[str] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> chosen runtime settings and every candidate's figure
    per_round_by_statistic: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # p50/p90 -> name -> per-round figure
    # name -> its ratio to the reference timed at the same runtime settings as the model's chosen ones (with tuning)
    matched: dict[str, dict[str, Any]] = field(default_factory=dict)

    def latency(self, name: str) -> float:
        return float(np.median(self.per_round[name]))

    def ratio(self, name: str, to: str | None = None) -> float:
        to = to or self.reference
        if to is None:
            raise ValueError("no reference to take a ratio to")
        return float(np.median(np.asarray(self.per_round[name]) / np.asarray(self.per_round[to])))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def speedup(self, name: str) -> dict[str, Any]:
        """The speed-up over the reference that compress prints, as stage-row fields. Headline: the reference at
        the model's own runtime settings (a neighbour busy on another core leaves that pair alone, while the
        reference's fastest settings may need that core: 12x quiet became 20x loaded). Beside it, the reference
        at its own fastest settings ('tuned')."""
        tuned = self.ratios[name]
        matched = self.matched.get(name) or tuned
        out = {"speedup_p50": 1.0 / matched["ratio"], "speedup_ci95": _inverse_interval(matched["ci95"]),
               "speedup_tuned_p50": 1.0 / tuned["ratio"], "speedup_tuned_ci95": _inverse_interval(tuned["ci95"])}
        if name in self.matched:
            out["speedup_basis"] = {"teacher_settings": matched["settings"], **matched["reference"]}
        return out


SPEEDUP_FIELDS = ("speedup_p50", "speedup_ci95", "speedup_tuned_p50", "speedup_tuned_ci95", "speedup_basis")


def _inverse_interval(ci: list[float]) -> list[float] | None:
    return [1.0 / ci[1], 1.0 / ci[0]] if np.isfinite(ci[0]) and np.isfinite(ci[1]) and ci[0] > 0 else None


def _aggregate(stats: list[dict[str, Any]], order_note: str) -> dict[str, Any]:
    out = dict(stats[-1])
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cov", "throughput_per_s"):
        if key in out:
            out[key] = float(np.median([s[key] for s in stats]))
    for key, pick in (("min_ms", min), ("max_ms", max), ("iterations", sum)):
        if key in out:
            out[key] = pick(s[key] for s in stats)
    out["options"] = {**stats[-1].get("options", {}), "rounds": len(stats), "interleaved": order_note,
                      "aggregation": "median over interleaved rounds of each round's figure (min/max: over all runs)"}
    return out


def _ratios(per_round: dict[str, list[float]], reference: str | None, ci: float) -> dict[str, dict[str, Any]]:
    if reference is None:
        return {}
    base = np.asarray(per_round[reference])
    out = {}
    for name, values in per_round.items():
        if name == reference:
            continue
        out[name] = _paired_ratio(np.asarray(values) / base, ci)
    return out


def _paired_ratio(r: Any, ci: float) -> dict[str, Any]:
    """The median of per-round paired ratios, its bootstrap 95 % interval, and whether that is within `ci` of it."""
    ratio, (low, high) = float(np.median(r)), bootstrap_median_ci(r)
    return {"ratio": ratio, "ci95": [low, high], "tight": bool(np.isfinite(low) and (high - low) / 2 <= ci * ratio)}


def _matched(raw: dict[str, list[list[dict[str, Any]]]], variants: dict[str, list[tuple[Any, Any]]], chosen: dict[str, int],
             reference: str | None, key: str, ci: float) -> dict[str, dict[str, Any]]:
    """name -> its per-round ratio to the reference at the same settings (the same candidate index: every model
    gets the target's one list), with the reference's figures there; only when tuning timed several settings."""
    if reference is None or len(variants[reference]) < 2:
        return {}
    out = {}
    for name, i in chosen.items():
        own, ref = raw[name][i], raw[reference][i]
        if name == reference or len(ref) != len(own) or variants[name][i][1].settings() != variants[reference][i][1].settings():
            continue
        r = np.asarray([s[key] for s in own]) / np.asarray([s[key] for s in ref])
        figures = {f"teacher_{k}": float(np.median([s[k] for s in ref])) for k in ("p50_ms", "p90_ms") if all(k in s for s in ref)}
        out[name] = {**_paired_ratio(r, ci), "settings": variants[name][i][1].settings(), "reference": figures}
    return out


def _variants(target: Any, models: Mapping[str, Any], cfg: MeasureConfig) -> dict[str, list[tuple[Any, Any]]]:
    """name -> [(artifact, ProfileSpec)]: one spec per runtime setting the target offers when tuning, else the one spec."""
    base = cfg.spec()
    if cfg.tune == "off" or not hasattr(target, "settings_candidates"):
        return {n: [(a, base)] for n, a in models.items()}
    return {n: [(a, s) for s in target.settings_candidates(base, cfg.tune)] for n, a in models.items()}


def _chosen(raw: dict[str, list[list[dict[str, Any]]]], key: str) -> dict[str, int]:
    """Per model, the variant with the lowest median statistic over the rounds so far, among those still timed
    (the most rounds), so that every model's per-round figures pair up with the reference's."""
    out = {}
    for n, variants in raw.items():
        most = max(len(rounds) for rounds in variants)
        out[n] = min((i for i, rounds in enumerate(variants) if len(rounds) == most),
                     key=lambda i: float(np.median([s[key] for s in variants[i]])))
    return out


def compare(target: Any, models: Mapping[str, Any], cfg: MeasureConfig = MeasureConfig(), *, reference: str | None = None,
            progress: Callable[[str], None] = lambda m: None, profile: Callable[[Any], dict[str, Any]] | None = None) -> Comparison:
    """Time `models` (name -> OnnxArtifact) on `target`, interleaved, until the ratios to `reference` are tight.

    With `cfg.tune`, every runtime setting the target offers is timed too, in the same rounds, and each
    model is reported at its fastest (`settings` records the choice and every candidate's figure).
    A target that cannot measure here but predicts returns its (deterministic) predictions, kind
    "predicted". `profile(art)` replaces the target's timing (tests inject deterministic latencies)."""
    names = list(models)
    if not names:
        raise ValueError("nothing to measure")
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models")
    key, choose_key = f"{cfg.statistic}_ms", f"{cfg.choose_by or cfg.statistic}_ms"
    if profile is None and not target.available().available:
        stats = {n: target.latency(models[n], cfg.spec()).to_dict() for n in names}
        per_round = {n: [float(s[key])] for n, s in stats.items()}
        by_stat = {stat: {n: [float(s[f"{stat}_ms"])] for n, s in stats.items()} for stat in ("p50", "p90")}
        return Comparison("predicted", cfg.statistic, stats, per_round, _ratios(per_round, reference, cfg.ci), reference,
                          per_round_by_statistic=by_stat)
    variants = _variants(target, models, cfg) if profile is None else {n: [(a, cfg.spec())] for n, a in models.items()}
    timing = (lambda art, spec: profile(art)) if profile is not None else (lambda art, spec: target.profile(art, spec).to_dict())
    sampler, started = LoadSampler(), time.monotonic()
    raw: dict[str, list[list[dict[str, Any]]]] = {n: [[] for _ in variants[n]] for n in names}
    stopped, ratios, matched, per_round = "max rounds", {}, {}, {}
    flat = [(n, i) for n in names for i in range(len(variants[n]))]
    timed = len(flat)
    for r in range(cfg.max_rounds):
        for n, i in round_order(flat, r):
            raw[n][i].append(timing(*variants[n][i]))
        chosen = _chosen(raw, choose_key)
        if r == 1 and len(flat) > len(names):
            flat = _survivors(raw, chosen, choose_key, reference)
        per_round = {n: [float(s[key]) for s in raw[n][chosen[n]]] for n in names}
        ratios = _ratios(per_round, reference, cfg.ci)
        matched = _matched(raw, variants, chosen, reference, key, cfg.ci)
        if r + 1 >= cfg.min_rounds:
            if all(v["tight"] for v in [*ratios.values(), *matched.values()]):
                stopped = "tight"
                break
            if time.monotonic() - started >= cfg.time_cap_s:
                stopped = "time cap"
                break
        _report_round(progress, r, len(flat), target.name, ratios)
    load = sampler.finish()
    chosen = _chosen(raw, choose_key)
    order_note = f"{len(flat)} timed configuration(s), order turned every round and reversed every other (A B B A ...)"
    stats = {n: _aggregate(raw[n][chosen[n]], order_note) for n in names}
    settings = {n: _settings_record(variants[n], raw[n], chosen[n], choose_key) for n in names} if timed > len(names) else {}
    by_stat = {stat: {n: [float(s[f"{stat}_ms"]) for s in raw[n][chosen[n]]] for n in names} for stat in ("p50", "p90")
               if all(f"{stat}_ms" in s for n in names for s in raw[n][chosen[n]])}  # an injected profile may give fewer figures
    result = Comparison("measured", cfg.statistic, stats, per_round, ratios, reference, len(raw[names[0]][chosen[names[0]]]),
                        round(time.monotonic() - started, 2), stopped, load.to_dict(), settings=settings, per_round_by_statistic=by_stat,
                        matched=matched)
    _judge_noise(result, cfg)
    return result


def _survivors(raw: dict[str, list[list[dict[str, Any]]]], chosen: dict[str, int], key: str, reference: str | None = None,
               margin: float = 1.15) -> list[tuple[str, int]]:
    """After two rounds, keep timing only the settings within `margin` of each model's fastest (a setting
    15 % slower twice in a row will not win; this halves the closing rounds' time on a 2-core host). The
    reference stays timed at every setting another model keeps: the speed-up at the model's own settings."""
    keep = []
    for n, variants in raw.items():
        best = float(np.median([s[key] for s in variants[chosen[n]]]))
        keep += [(n, i) for i, rounds in enumerate(variants) if float(np.median([s[key] for s in rounds])) <= margin * best]
    if reference is not None:
        twins = sorted({i for n, i in keep if n != reference} - {i for n, i in keep if n == reference})
        keep += [(reference, i) for i in twins]
    return keep


def _report_round(progress: Callable[[str], None], r: int, count: int, target: str, ratios: dict[str, dict[str, Any]]) -> None:
    if ratios:
        finite = [v for v in ratios.values() if np.isfinite(v["ci95"][0]) and np.isfinite(v["ci95"][1])]
        if not finite:  # one round gives no interval yet (the bootstrap needs two paired figures)
            progress(f"latency round {r + 1}: {count} configuration(s) interleaved on {target}, interval after the next round")
            return
        worst = max(finite, key=lambda v: (v["ci95"][1] - v["ci95"][0]) / max(v["ratio"], 1e-12))
        progress(f"latency round {r + 1}: {count} configuration(s) interleaved on {target}, widest ratio interval "
                 f"{worst['ci95'][0]:.3f}-{worst['ci95'][1]:.3f}")
    else:
        progress(f"latency round {r + 1}: {count} configuration(s) on {target}")


def _settings_record(variants: list[tuple[Any, Any]], raw: list[list[dict[str, Any]]], chosen: int, key: str) -> dict[str, Any]:
    candidates = [{**spec.settings(), key: float(np.median([s[key] for s in rounds]))} for (_, spec), rounds in zip(variants, raw)]
    best = candidates[chosen][key]
    for c in candidates:
        c["vs_chosen"] = c[key] / best if best > 0 else None
    return {"chosen": variants[chosen][1].settings(), "statistic": key, "candidates": candidates}


def _judge_noise(result: Comparison, cfg: MeasureConfig) -> None:
    why = []
    if result.load and result.load["oversubscribed"]:
        why.append(f"host oversubscribed (other processes used {result.load['others_busy_share'] * 100:.0f}% of the CPU, "
                   f"load average {result.load['load_average']:g})")
    for name, values in result.per_round.items():
        v = np.asarray(values)
        if len(v) >= 3 and v.mean() > 0 and v.std() / v.mean() > NOISY_COV:
            why.append(f"{name}'s per-round {cfg.statistic} varies by {v.std() / v.mean() * 100:.0f}% (CoV)")
    for name, r in result.ratios.items():
        if not r["tight"] and np.isfinite(r["ci95"][0]) and (r["ci95"][1] - r["ci95"][0]) / 2 > 2 * cfg.ci * r["ratio"]:
            why.append(f"{name}'s ratio interval {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} is wide")
    result.noisy, result.why_noisy = bool(why), why


def measure_one(target: Any, art: Any, cfg: MeasureConfig = MeasureConfig(), progress: Callable[[str], None] = lambda m: None) -> Comparison:
    """One model's latency with the same machinery (rounds of blocks, load recorded), no reference."""
    return compare(target, {"model": art}, replace(cfg, max_rounds=max(cfg.min_rounds, 1)), progress=progress)
