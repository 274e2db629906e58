"""Progress for humans: one live view across the whole pipeline on a terminal, plain lines elsewhere.

Passes report free-text messages through `ctx.progress(message)`; the pipeline runner also calls
`pass_started` / `pass_finished` (and `plan`, each pass's training images) when the reporter has them.
A message carrying "k/n" (an epoch, a generation, a step; "epoch k/n, step s/S" inside an epoch) gives
the pass's ETA; one containing "best" is kept as its best-so-far. The run's ETA adds the passes still
to come at the training rate measured so far (images/s), so it is an estimate and is shown as one.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

_FRACTION = re.compile(r"\b(\d+)\s*/\s*(\d+)\b")
_IN_EPOCH = re.compile(r"\bepoch (\d+)/(\d+), step (\d+)/(\d+)")


def fraction_done(message: str) -> tuple[float, int] | None:
    """(units done, units in all) from a message's first "k/n"; "epoch k/n, step s/S" counts the epoch's steps in."""
    nested = _IN_EPOCH.search(message)
    if nested:
        epoch, epochs, step, steps = (int(g) for g in nested.groups())
        if 0 < epoch <= epochs and 0 < step <= steps:
            return epoch - 1 + step / steps, epochs
    match = _FRACTION.search(message)
    if match:
        done, total = int(match.group(1)), int(match.group(2))
        if 0 < done <= total:
            return float(done), total
    return None


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _row() -> dict[str, Any]:
    return {"state": "pending", "note": "", "best": "", "start": None, "seconds": None, "eta": None, "base": None, "total": None,
            "last": None}


class PipelineProgress:
    def __init__(self, console: Console, passes: list[str]):
        self.console = console
        self.live_mode = console.is_terminal
        self.rows: dict[str, dict[str, Any]] = {name: _row() for name in passes}
        self.planned: dict[str, int] = {}  # training images each pass will push through (at most; 0: none, or not known)
        self.units: dict[str, int] = {}  # the "n" of the k/n a pass's training messages count (epochs, candidates)
        self.rate: float | None = None  # training images/s measured so far in this run
        self.current: str | None = None
        self.message = ""
        self.started = time.perf_counter()
        self._live: Live | None = None

    def __enter__(self) -> "PipelineProgress":
        if self.live_mode:
            # get_renderable: the view is rebuilt on every refresh tick, so the clocks run while a pass is
            # busy between messages (a static table froze the display for minutes during long epochs)
            self._live = Live(console=self.console, refresh_per_second=4, transient=False, get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(*exc)

    # -- called by the pipeline ------------------------------------------------------------------
    def plan(self, work: dict[str, tuple[int, int]]) -> None:
        """Each pass's (training images, the n its k/n messages count): the run's ETA prices the passes to come with them."""
        self.planned = {name: int(images) for name, (images, _) in work.items() if images}
        self.units = {name: int(units) for name, (_, units) in work.items() if units}

    def pass_started(self, name: str) -> None:
        row = self.rows.setdefault(name, _row())
        row.update(state="running", start=time.perf_counter())
        row["base"], row["last"] = (row["start"], 0.0), row["start"]
        self.current = name
        self._refresh()

    def pass_dropped(self, name: str, why: str) -> None:
        """A pass the recipe listed but this run will not run (a built-in recipe's logit passes for a model without logits)."""
        if name in self.rows:
            self.rows[name].update(state="dropped", note=why)
        self.planned.pop(name, None)
        if not self.live_mode:
            self.console.print(f"[dim]… {name}: dropped ({why})[/]", highlight=False)
        self._refresh()

    def pass_finished(self, name: str, seconds: float, cached: bool) -> None:
        row = self.rows[name]
        row.update(state="cached" if cached else "done", seconds=seconds, eta=None)
        self.current = None
        if not self.live_mode:
            left = self.run_eta()
            after = f"; about {_minutes(left)} left (an estimate at {self.rate:.0f} training images/s)" if left else ""
            self.console.print(f"[dim]… {name}: {'reused from cache' if cached else 'done'} in {seconds:.1f}s{after}[/]", highlight=False)
        self._refresh()

    def __call__(self, message: str) -> None:
        self.message = message
        row = self.rows.get(self.current or "")
        if row is not None:
            self._note(row, message)
        if not self.live_mode:
            self.console.print(f"[dim]… {message}[/]", highlight=False)
        self._refresh()

    def _note(self, row: dict[str, Any], message: str) -> None:
        now = time.perf_counter()
        row["note"] = message
        if "best" in message.lower():
            row["best"] = message
        if "resuming" in message.lower():
            row["base"] = None  # the work done before the interruption is not this run's speed: rebase on the next k/n
        found = fraction_done(message)
        if found is not None and row["start"] is not None:
            done, total = found
            if row["base"] is None:
                row["base"] = (now, done)
            elif total != row["total"] and row["total"] is not None:
                row["base"] = (row["last"], 0.0)  # a new phase (evolution, then the few-shot tier): it began at the last message
            row["total"] = total
            since, done_then = row["base"]
            if done > done_then and now > since:
                per_unit = (now - since) / (done - done_then)
                row["eta"] = per_unit * (total - done)
                planned = self.planned.get(self.current or "")
                if planned and total == self.units.get(self.current or ""):  # a training phase: its speed prices the rest
                    self.rate = planned / total / per_unit
        row["last"] = now

    def run_eta(self) -> float | None:
        """Seconds left in the whole run: this pass's ETA plus the pending passes' training at the measured rate."""
        if self.rate is None:
            return None
        pending = sum(n for name, n in self.planned.items() if self.rows.get(name, {}).get("state") == "pending")
        current = self.rows.get(self.current or "", {}).get("eta") or 0.0
        return current + pending / self.rate

    # -- rendering -------------------------------------------------------------------------------
    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _render(self) -> Table:
        elapsed = time.perf_counter() - self.started
        left = self.run_eta()
        eta = f" · about {_minutes(left)} left (estimate)" if left else ""
        table = Table(title=f"squeeze compress · {elapsed:.0f}s{eta}", title_justify="left", expand=False)
        for col in ("pass", "state", "time", "ETA", "now / best so far"):
            table.add_column(col, overflow="fold", max_width=80 if col.startswith("now") else None)
        colors = {"pending": "dim", "running": "yellow", "done": "green", "cached": "cyan", "dropped": "dim"}
        for name, row in self.rows.items():
            seconds = row["seconds"] if row["seconds"] is not None else (time.perf_counter() - row["start"] if row["start"] else None)
            table.add_row(name, f"[{colors[row['state']]}]{row['state']}[/]", "-" if seconds is None else f"{seconds:.0f}s",
                          "-" if row["eta"] is None else f"{row['eta']:.0f}s",
                          (row["note"] + (f"\n[bold]{row['best']}[/]" if row["best"] and row["best"] != row["note"] else "")) or "")
        if self.current is None and self.message:
            table.caption = self.message
        return table
