"""Progress for humans: one live view across the whole pipeline on a terminal, plain lines elsewhere.

Passes report free-text messages through `ctx.progress(message)`; the pipeline runner also calls
`pass_started` / `pass_finished` when the reporter has them. A message carrying "k/n" (an epoch,
a generation, a step) gives the pass's ETA; one containing "best" is kept as its best-so-far.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

_FRACTION = re.compile(r"\b(\d+)\s*/\s*(\d+)\b")


class PipelineProgress:
    def __init__(self, console: Console, passes: list[str]):
        self.console = console
        self.live_mode = console.is_terminal
        self.rows: dict[str, dict[str, Any]] = {name: {"state": "pending", "note": "", "best": "", "start": None, "seconds": None,
                                                        "eta": None} for name in passes}
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
    def pass_started(self, name: str) -> None:
        row = self.rows.setdefault(name, {"state": "pending", "note": "", "best": "", "start": None, "seconds": None, "eta": None})
        row.update(state="running", start=time.perf_counter())
        self.current = name
        self._refresh()

    def pass_dropped(self, name: str, why: str) -> None:
        """A pass the recipe listed but this run will not run (a built-in recipe's logit passes for a model without logits)."""
        if name in self.rows:
            self.rows[name].update(state="dropped", note=why)
        if not self.live_mode:
            self.console.print(f"[dim]… {name}: dropped ({why})[/]", highlight=False)
        self._refresh()

    def pass_finished(self, name: str, seconds: float, cached: bool) -> None:
        row = self.rows[name]
        row.update(state="cached" if cached else "done", seconds=seconds, eta=None)
        self.current = None
        if not self.live_mode:
            self.console.print(f"[dim]… {name}: {'reused from cache' if cached else 'done'} in {seconds:.1f}s[/]", highlight=False)
        self._refresh()

    def __call__(self, message: str) -> None:
        self.message = message
        row = self.rows.get(self.current or "")
        if row is not None:
            row["note"] = message
            if "best" in message.lower():
                row["best"] = message
            match = _FRACTION.search(message)
            if match and row["start"] is not None:
                done, total = int(match.group(1)), int(match.group(2))
                if 0 < done <= total:
                    elapsed = time.perf_counter() - row["start"]
                    row["eta"] = elapsed * (total - done) / done
        if not self.live_mode:
            self.console.print(f"[dim]… {message}[/]", highlight=False)
        self._refresh()

    # -- rendering -------------------------------------------------------------------------------
    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _render(self) -> Table:
        elapsed = time.perf_counter() - self.started
        table = Table(title=f"squeeze compress · {elapsed:.0f}s", title_justify="left", expand=False)
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
