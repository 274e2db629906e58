"""The prune pass: dependency-graph structured pruning, chosen by measured latency, recovered by layer distillation.

Each step builds candidate models, measures them on the target next to the current model (and the
unpruned input) in interleaved rounds, and keeps one:
- width candidates: every prunable layer cut to a cumulative fraction of its *original* width
  (Torch-Pruning's DependencyGraph keeps residual adds, depthwise convs and the classifier's input
  consistent; the classifier's outputs are kept), rounded to the target's `channel_multiple`;
- a depth candidate (with `depth`): the identity-shaped block with the lowest block importance
  BI = 1 - E[cos(block input, block output)] on calibration data, replaced by nn.Identity.
With a latency budget the step aims at a geometric share of the remaining gap and keeps the
candidate that reaches it with the least damage (KL to the current model on calibration data);
without one, the linear width schedule sets the aim. A step whose measured latency is not lower
than the current model's (median of per-round ratios) is rejected: smaller but not faster is not
accepted. Between steps the kept model is recovered by distillation: logit KD from the teacher,
plus, with `layer_distill`, a normalised MSE between each kept block's output and the unpruned
model's (1x1 adapters where widths differ); with `teacher_forced`, the block next to a removed
depth interval is first trained on the pre-step model's input to that interval (PPCL-style).

Pruning needs a float model: fake-quant observers are not pruned with their layers (Torch-Pruning
#291), so the right order is prune, then quantize.

config.py     PruneConfig, the plan's actions
structure.py  layers, blocks, widths; width cuts through Torch-Pruning's dependency graph, block removal
latency.py    measuring candidates (through squeeze/measure/latency.py; tests inject their own)
recovery.py   recovery by logit KD + per-block layer distillation (+ teacher forcing)
loop.py       the pruning loop (Pruner)
pass_.py      prune() (writes the reloadable checkpoint) and PrunePass
"""

from squeeze.passes.prune.config import PruneConfig
from squeeze.passes.prune.latency import CallableLatency, LatencyMeter, Measurement, TargetLatency
from squeeze.passes.prune.loop import prune_model
from squeeze.passes.prune.pass_ import MODEL_FILE, RESULT_FILE, PrunePass, check_float_model, prune

__all__ = ["CallableLatency", "LatencyMeter", "MODEL_FILE", "Measurement", "PruneConfig", "PrunePass", "RESULT_FILE", "TargetLatency",
           "check_float_model", "prune", "prune_model"]
