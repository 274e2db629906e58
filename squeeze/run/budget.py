"""The latency a run's passes aim at: the user's budget, or one derived from the teacher's latency."""

from __future__ import annotations

from typing import Any

DERIVED_SPEEDUP = 4.0  # no --latency-budget: passes that aim at a latency aim at 1/4 of the teacher's p50
# The gate bounds p90 of the final measurement, while search and prune compare p50 (steadier on a
# shared CPU). On this machine p90 ran 5-20 % above p50 at sub-millisecond latencies, so a gated
# budget is aimed at with this much margin; a derived budget (not gated) is aimed at as is.
GATED_P50_MARGIN = 0.85


def needs_teacher_latency(budget_ms: float | None, steps: list[Any], ratio: float | None = None) -> bool:
    """Whether `derive` needs the teacher's latency: a budget relative to it, or none given and a pass aims at one."""
    if ratio is not None:
        return True
    return budget_ms is None and any(s.pass_.aims_at_latency(s.config) and not _sets_own_budget(s.config) for s in steps)


def derive(budget_ms: float | None, teacher_latency: dict[str, Any] | None, steps: list[Any], ratio: float | None = None) -> dict[str, Any]:
    """The user's budget, else (when a pass aims at a latency of its own accord) 1/4 of the teacher's p50.

    A derived budget steers search and pruning only; the gate checks latency only against a budget
    the user gave. `passes_aim_p50_ms` is what the passes aim at: a gated budget bounds p90 while
    they compare p50, so they aim GATED_P50_MARGIN below it. A derived budget from a noisy
    measurement is marked so: the console and the report say it."""
    if ratio is not None and teacher_latency is not None:
        # gated on the ratio to the teacher timed in the same closing rounds, so a host that runs faster or slower
        # between the up-front measurement and the gate moves both; the passes aim at the up-front figure times it
        aim = round(teacher_latency["p50_ms"] * ratio, 6)
        out = {"latency_ms": aim, "ratio": ratio, "gated": True, "passes_aim_p50_ms": round(aim * GATED_P50_MARGIN, 6),
               "source": f"--latency-budget {ratio:g}x: p90 at most {ratio:g} of the teacher's p90 in the same closing rounds (gated)"}
        if teacher_latency.get("noisy"):
            out.update(noisy=True, why_noisy=teacher_latency.get("why_noisy", []))
        return out
    if budget_ms is not None:
        return {"latency_ms": budget_ms, "source": "--latency-budget (p90, gated)", "gated": True,
                "passes_aim_p50_ms": round(budget_ms * GATED_P50_MARGIN, 6)}
    if needs_teacher_latency(budget_ms, steps) and teacher_latency is not None:
        derived = round(teacher_latency["p50_ms"] / DERIVED_SPEEDUP, 6)
        out = {"latency_ms": derived, "source": f"derived: the teacher's p50 / {DERIVED_SPEEDUP:g} (steers passes, not gated)",
               "passes_aim_p50_ms": derived}
        if teacher_latency.get("noisy"):
            out["noisy"] = True
            out["why_noisy"] = teacher_latency.get("why_noisy", [])
        return out
    return {"latency_ms": None, "source": "none"}


def _sets_own_budget(config: Any) -> bool:
    return getattr(config, "latency_budget_ms", None) is not None or getattr(config, "latency_budget_ratio", None) is not None


def aim_passes(steps: list[Any], budget: dict[str, Any]) -> None:
    """Passes that aim at a latency take the run's budget unless the recipe set their own; each pass
    decides how (search aims higher when a prune pass follows it: SearchPass.aim)."""
    if budget["latency_ms"] is None:
        return
    names = [s.pass_.name for s in steps]
    for i, step in enumerate(steps):
        step.config = step.pass_.aim(step.config, budget["passes_aim_p50_ms"], tuple(names[i + 1:]))
