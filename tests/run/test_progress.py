"""The compress live view keeps its clocks running between messages (a pass busy in one long epoch must
not look hung), and a log or pipe gets plain lines instead of a live table."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from squeeze.run.progress import PipelineProgress


def test_live_view_clock_runs_without_messages():
    buf = io.StringIO()
    with PipelineProgress(Console(file=buf, force_terminal=True, width=120), ["search", "distill"]) as progress:
        progress.pass_started("search")
        progress("generation 1/4")
        time.sleep(1.6)  # no message meanwhile: only the refresh thread redraws
    shown = {int(s) for s in re.findall(r"squeeze compress · (\d+)s", buf.getvalue())}
    assert len(shown) >= 2 and max(shown) >= 1, shown


def test_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    with PipelineProgress(Console(file=buf, force_terminal=False, width=1000), ["search"]) as progress:
        progress.pass_started("search")
        progress("generation 2/4, best score 0.5")
        progress.pass_finished("search", 3.0, cached=False)
    lines = buf.getvalue().splitlines()
    assert lines == ["… generation 2/4, best score 0.5", "… search: done in 3.0s"]


def test_a_dropped_pass_is_shown_as_dropped_not_pending():
    """A built-in recipe's logit passes, dropped for a model without class logits, never look as if they were still to run."""
    buf = io.StringIO()
    with PipelineProgress(Console(file=buf, force_terminal=True, width=160), ["search", "distill", "prune"]) as progress:
        progress.pass_dropped("search", "needs class logits")
        table = progress._render()
    assert progress.rows["search"]["state"] == "dropped" and progress.rows["prune"]["state"] == "pending"
    cells = Console(file=io.StringIO(), width=160)
    with cells.capture() as captured:
        cells.print(table)
    assert re.search(r"search\s*│\s*dropped\s*│.*needs class logits", captured.get())
