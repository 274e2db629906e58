"""Progress inside an epoch: throttled in time, never at an epoch's end (that has its own message), rates from this run's steps."""

from __future__ import annotations

import time

from squeeze.run.progress import fraction_done
from squeeze.train.trainer import StepTicker


def test_ticks_are_throttled_and_read_as_a_fraction_of_the_run():
    said: list[str] = []
    ticker = StepTicker(said.append, "distillation", steps_per_epoch=100, epochs=4, batch_size=32, first_after_s=0.0, every_s=3600.0)
    ticker(1, 9)  # the first step seen (a resumed run): only the start of the rate's clock
    assert said == []
    ticker(1, 19)
    ticker(1, 29)  # inside the hour: quiet
    assert len(said) == 1 and said[0].startswith("distillation epoch 2/4, step 20/100, ") and said[0].endswith("images/s")
    assert fraction_done(said[0]) == (1.2, 4)
    ticker(2, 99)  # the last step of an epoch: the epoch's own line follows
    assert len(said) == 1


def test_short_epochs_say_nothing_but_their_own_end():
    said: list[str] = []
    ticker = StepTicker(said.append, "QAT", steps_per_epoch=10, epochs=3, batch_size=8, first_after_s=0.5, every_s=0.0)
    for epoch in range(2):
        for step in range(10):
            ticker(epoch, step)
    assert said == []
    ticker(2, 0)
    time.sleep(0.6)
    ticker(2, 1)  # this epoch has run past first_after_s: a long epoch
    assert len(said) == 1 and fraction_done(said[0]) == (2.2, 3)
