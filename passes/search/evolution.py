"""Regularised (aging) evolution (Real et al., AAAI 2019) with tournament selection, mutation and crossover.

The search loop is independent of what a candidate costs to score: `evaluate(genome)` returns a
`Candidate` that is either feasible (it has a score) or rejected with a reason (over a budget).
Rejected children never enter the population. Every random choice comes from one seeded
`random.Random`, and ties are broken by the candidate's key, so a seed fixes the run.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from squeeze.errors import UserInputError
from squeeze.passes.search.spaces import Genome, SearchSpace


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 24
    iterations: int = 96  # children proposed after the initial population
    tournament: int = 6  # members sampled per parent selection; the best of them is the parent
    crossover: float = 0.3  # chance a child is the crossover of two tournament winners (then mutated)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.population < 2 or self.iterations < 0:
            raise UserInputError("--population must be >= 2 and --iterations >= 0")
        if not 1 <= self.tournament <= self.population:
            raise UserInputError(f"tournament size must be between 1 and the population ({self.population}), got {self.tournament}")
        if not 0.0 <= self.crossover <= 1.0:
            raise UserInputError("crossover probability must be in [0, 1]")


@dataclass
class Candidate:
    key: str
    genome: Genome
    spec: dict[str, Any]
    feasible: bool
    score: float | None = None
    reason: str = ""  # why it was rejected
    metrics: dict[str, Any] = field(default_factory=dict)  # params, macs, latency, proxy terms, seconds

    def rank_key(self) -> tuple[float, str]:
        return (self.score if self.score is not None else float("-inf"), self.key)


@dataclass
class Event:
    """One evaluation in the search, in order: what was proposed, how, and what came of it."""

    step: int  # 0 = initial population
    origin: str  # "smallest", "random", "mutation", "crossover"
    candidate: Candidate
    repeat: bool  # already evaluated earlier (score re-used)


def evolve(space: SearchSpace, evaluate: Callable[[Genome], Candidate], cfg: EvolutionConfig, *,
           first: list[Genome] | None = None, on_event: Callable[[Event, Candidate | None], None] | None = None) -> list[Event]:
    """Run the search; returns every evaluation in order. `first` genomes join the initial population ahead of random ones."""
    rng = random.Random(cfg.seed)
    population: deque[Candidate] = deque()
    events: list[Event] = []
    seen: dict[str, Candidate] = {}
    best: Candidate | None = None

    def record(step: int, origin: str, genome: Genome) -> Candidate:
        nonlocal best
        key = space.key(genome)
        repeat = key in seen
        cand = seen[key] if repeat else evaluate(genome)
        seen[key] = cand
        if cand.feasible and (best is None or cand.rank_key() > best.rank_key()):
            best = cand
        event = Event(step, origin, cand, repeat)
        events.append(event)
        if on_event:
            on_event(event, best)
        return cand

    for genome in first or []:
        cand = record(0, "smallest", genome)
        if cand.feasible:
            population.append(cand)
    # Initial population: random samples; under a tight budget many are rejected, so after a few
    # tries per slot the rest grow by mutation from the feasible members (the smallest always is).
    tries = 0
    while len(population) < cfg.population and tries < 3 * cfg.population:
        tries += 1
        cand = record(0, "random", space.sample(rng))
        if cand.feasible:
            population.append(cand)
    while len(population) < cfg.population and population and tries < 8 * cfg.population:
        tries += 1
        cand = record(0, "mutation", space.mutate(rng.choice(list(population)).genome, rng))
        if cand.feasible:
            population.append(cand)

    def tournament() -> Candidate:
        sample = rng.sample(list(population), min(cfg.tournament, len(population)))
        return max(sample, key=Candidate.rank_key)

    for step in range(1, cfg.iterations + 1):
        if not population:
            break
        parent = tournament()
        if len(population) > 1 and rng.random() < cfg.crossover:
            other = tournament()
            genome, origin = space.mutate(space.crossover(parent.genome, other.genome, rng), rng), "crossover"
        else:
            genome, origin = space.mutate(parent.genome, rng), "mutation"
        cand = record(step, origin, genome)
        if cand.feasible:
            population.append(cand)
            if len(population) > cfg.population:
                population.popleft()  # aging: the oldest dies, not the worst
    return events


def best_candidates(events: list[Event], k: int) -> list[Candidate]:
    """The k best distinct feasible candidates seen in the whole search (not just the last population)."""
    unique: dict[str, Candidate] = {}
    for e in events:
        if e.candidate.feasible:
            unique[e.candidate.key] = e.candidate
    return sorted(unique.values(), key=Candidate.rank_key, reverse=True)[:k]


def progress_events(iterations: int, proxy: str, progress: Callable[[str], None]) -> Callable[[Event, Candidate | None], None]:
    """Evolution steps as 'k/n' progress (the live view's ETA) with the best score so far, every few steps."""
    every = max(1, iterations // 24)

    def report(event: Event, best: Candidate | None) -> None:
        if event.step and (event.step % every == 0 or event.step == iterations):
            score = f", best {proxy} score {best.score:.4g}" if best is not None and best.score is not None else ""
            progress(f"search step {event.step}/{iterations}{score}")

    return report


def candidate_row(rank: int, c: Candidate) -> dict[str, Any]:
    return {"rank": rank, "spec": c.spec, "score": c.score, "terms": c.metrics.get("terms", {}), "params": c.metrics["params"],
            "macs": c.metrics["macs"], "latency": c.metrics.get("latency"), "fewshot": c.metrics.get("fewshot")}


def event_row(e: Event) -> dict[str, Any]:
    c = e.candidate
    lat = c.metrics.get("latency")
    return {"step": e.step, "origin": e.origin, "repeat": e.repeat, "spec": c.spec, "feasible": c.feasible, "reason": c.reason,
            "score": c.score, "terms": c.metrics.get("terms", {}), "params": c.metrics["params"], "macs": c.metrics["macs"],
            "latency_ms": lat and {k: lat[k] for k in ("p50_ms", "p90_ms", "mean_ms")}, "latency_kind": lat and lat["kind"]}
