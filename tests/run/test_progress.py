"""The compress live view keeps its clocks running between messages (a pass busy in one long epoch must
not look hung), and a log or pipe gets plain lines instead of a live table."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from squeeze.run.progress import PipelineProgress, fraction_done


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


def test_an_eta_inside_the_first_epoch_from_the_step_fraction():
    """'epoch 1/10, step 50/100' is 0.5 of 10 epochs: a 10-minute epoch no longer hides the ETA until it ends."""
    assert fraction_done("distillation epoch 1/10, step 50/100, 900 images/s") == (0.5, 10)
    assert fraction_done("epoch 3/10 loss 0.31 (kd 0.2), cal acc 98.00%") == (3.0, 10)
    assert fraction_done("few-shot 2/8: 91.0 % after 50 steps") == (2.0, 8)
    assert fraction_done("measuring the top 3 on cpu") is None
    progress = PipelineProgress(Console(file=io.StringIO(), force_terminal=False, width=1000), ["distill"])
    progress.pass_started("distill")
    progress.rows["distill"]["base"] = (time.perf_counter() - 10.0, 0.0)  # as if the pass began 10 s ago
    progress("distillation epoch 1/10, step 50/100, 900 images/s")
    assert 170 < progress.rows["distill"]["eta"] < 200  # 10 s per half epoch: 9.5 epochs left


def test_the_run_eta_prices_the_passes_to_come_at_the_measured_training_rate():
    buf = io.StringIO()
    progress = PipelineProgress(Console(file=buf, force_terminal=False, width=1000), ["distill", "prune", "quantize"])
    progress.plan({"distill": (10_000, 10), "prune": (3_000, 0), "quantize": (2_000, 2)})
    assert progress.run_eta() is None  # nothing measured yet: no made-up figure
    progress.pass_started("distill")
    progress.rows["distill"]["base"] = (time.perf_counter() - 10.0, 0.0)
    progress("epoch 5/10 loss 0.3")  # 5,000 images in 10 s: 500 images/s
    assert progress.rate == pytest.approx(500, rel=0.05)
    assert progress.run_eta() == pytest.approx(10 + 5_000 / 500, rel=0.05)  # the rest of distill + prune and quantize
    progress.pass_finished("distill", 20.0, cached=False)
    assert re.search(r"distill: done in 20\.0s; about 10s left \(an estimate at 50\d training images/s\)", buf.getvalue())
    assert re.search(r"squeeze compress · \d+s · about 10s left \(estimate\)", progress._render().title)  # the live view's title


def test_a_resumed_pass_times_only_the_work_done_in_this_run():
    progress = PipelineProgress(Console(file=io.StringIO(), force_terminal=False, width=1000), ["distill"])
    progress.pass_started("distill")
    progress("distillation: resuming after epoch 8 of 10 (state.pt)")
    progress("distillation epoch 9/10, step 10/100, 900 images/s")  # the first fraction after resuming: the new base
    progress.rows["distill"]["base"] = (time.perf_counter() - 10.0, 8.1)
    progress("distillation epoch 9/10, step 60/100, 900 images/s")
    assert 25 < progress.rows["distill"]["eta"] < 35  # 0.5 epoch per 10 s, 1.4 left; not 8.6 epochs' credit
