"""Prune pass: dependency-graph width pruning, block removal, the latency rule, recovery and reloading, on real digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from squeeze import zoo
from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.errors import UserInputError
from squeeze.io.modelio import load_model
from squeeze.passes.prune import CallableLatency, PruneConfig, prune, prune_model
from squeeze.passes.prune.structure import (block_importance, find_quantizer, layer_widths, output_layer, planned_width, prune_width,
                                            recalibrate_batchnorm)
from squeeze.io.structure import apply_structure, record_structure
from squeeze.targets import get_target

ROOT = Path(__file__).resolve().parents[2]
DIGITS_TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"
SPEC = InputSpec((1, 1, 8, 8))
SMALL_MOBILENET = ((1, 16, 1, 1), (4, 24, 2, 1), (6, 32, 2, 2))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return zoo.ResNet(1, 10, widths=(16, 32), blocks=(2, 2)).eval()


def small_mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return zoo.MobileNetV2(1, 10, width_mult=1.0, stages=SMALL_MOBILENET, stem_channels=16, head_channels=64).eval()


def artifact(module: nn.Module, **meta) -> ModelArtifact:
    return ModelArtifact(module, SPEC, "test-model", "checkpoint", "", dict(meta))


def convs(module: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def fast(**overrides) -> PruneConfig:
    """No recovery, one latency round: for tests about structure and selection. Widths in blocks of 8 whatever the host's
    kernel block: these models are 8-32 channels wide."""
    return PruneConfig(**{"recover_epochs": 0, "final_epochs": 0, "profile_rounds": 1, "final_rounds": 1, "channel_multiple": 8, **overrides})


def macs_latency(module: nn.Module) -> float:
    """A deterministic stand-in for a latency measurement: proportional to MACs."""
    from squeeze.passes.prune.structure import size_of

    return size_of(module, SPEC.example())["macs"] / 1e6


@pytest.mark.parametrize("build", [small_resnet, small_mobilenet], ids=["resnet-residual", "mobilenetv2-depthwise"])
def test_width_pruning_keeps_residual_and_depthwise_graphs_consistent(build):
    model = build()
    x = torch.randn(4, 1, 8, 8)
    classifier = output_layer(model, SPEC.example())
    original = layer_widths(model)
    params_before = sum(p.numel() for p in model.parameters())
    depthwise = {n for n, c in convs(model).items() if c.groups > 1 and c.groups == c.in_channels == c.out_channels}
    assert bool(depthwise) == (build is small_mobilenet)
    widths = prune_width(model, SPEC.example(), original, 0.5, 8, classifier, "l2")
    assert model(x).shape == (4, 10) and classifier == "head" and widths["head"] == 10  # the classes are never pruned
    for name, conv in convs(model).items():
        assert conv.out_channels == planned_width(original[name], 0.5, 8), name
        if name in depthwise:  # depthwise before, depthwise after
            assert conv.groups == conv.in_channels == conv.out_channels, name
    assert model.head.in_features == widths[[n for n in convs(model)][-1]]  # the head's inputs follow the last conv
    assert sum(p.numel() for p in model.parameters()) < 0.4 * params_before


@pytest.mark.parametrize("importance", ["l2", "bn", "taylor"])
def test_every_importance_prunes(importance, digits):
    model = small_resnet()
    calibration = digits.batch("calibration", 64)
    prune_width(model, SPEC.example(), layer_widths(model), 0.5, 8, "head", importance, calibration)
    assert convs(model)["stem.0"].out_channels == 8 and model(calibration[0]).shape == (64, 10)


def test_channel_counts_round_to_the_target_multiple():
    assert planned_width(64, 0.3, 8) == 48  # 44.8 -> nearest multiple of 8
    assert planned_width(64, 0.3, 16) == 48
    assert planned_width(24, 0.9, 8) == 8  # never below one multiple
    assert planned_width(8, 0.5, 8) == 8  # a layer no wider than one multiple is left alone
    assert planned_width(96, 0.5, 8, groups=3) == 48  # grouped convs: a multiple of lcm(8, groups)
    model = small_mobilenet()
    original = layer_widths(model)
    prune_width(model, SPEC.example(), original, 0.4, 16, "head", "l2")
    for name, conv in convs(model).items():
        assert conv.out_channels % 16 == 0 or conv.out_channels == original[name], (name, conv.out_channels)
        assert conv.out_channels == planned_width(original[name], 0.4, 16)


def test_depth_removal_replaces_the_least_important_identity_block(digits):
    model = small_resnet()
    x = digits.batch("calibration", 64)[0]
    scores = block_importance(model, x)
    # stages.1.0 halves the resolution (not identity-shaped): never a candidate
    assert set(scores) == {"stages.0.0", "stages.0.1", "stages.1.1"}
    assert all(0.0 <= s <= 2.0 for s in scores.values())
    weakest = min(scores, key=scores.get)
    from squeeze.passes.prune.structure import remove_block

    remove_block(model, weakest)
    recalibrate_batchnorm(model, x)
    assert isinstance(model.get_submodule(weakest), nn.Identity) and model(x).shape == (64, 10)
    assert weakest not in block_importance(model, x)
    # the edit is recorded as data and repeats on a fresh factory model
    record = record_structure(model, zoo.ResNet(1, 10, widths=(16, 32), blocks=(2, 2)))
    assert record["removed"] == [weakest] and record["layers"] == {}
    rebuilt = apply_structure(zoo.ResNet(1, 10, widths=(16, 32), blocks=(2, 2)), record)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_a_step_that_is_not_faster_is_rejected(digits):
    """Injected latency: pruning makes the model *slower* (e.g. a runtime without kernels for odd widths)."""
    def slower_when_smaller(m: nn.Module) -> float:
        return 2.0 - macs_latency(m) / 10.0

    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, result = prune_model(artifact(model), digits, get_target("cpu"), fast(steps=2), meter=CallableLatency(slower_when_smaller))
    steps = result["steps"][1:]
    assert len(steps) == 2 and not any(s["accepted"] for s in steps)
    assert all("smaller but not faster, rejected" in s["reason"] for s in steps)
    assert all(s["candidates"][0]["ratio_to_current"] > 1.0 for s in steps)
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert result["plan"] == [] and result["latency"]["kind"] == "injected"


def test_widths_are_chosen_where_latency_actually_drops(digits):
    """A latency cliff: nothing gets faster until the stem is at 8 channels. The 0.25 step is rejected,
    the 0.5 step (which crosses the cliff) is kept, and MACs and latency ratios are reported side by side."""
    def cliff(m: nn.Module) -> float:
        return 1.0 if m.stem[0].out_channels > 8 else 0.4

    pruned, result = prune_model(artifact(small_resnet()), digits, get_target("cpu"), fast(steps=2), meter=CallableLatency(cliff))
    first, second = result["steps"][1], result["steps"][2]
    assert first["action"] == "width:0.2500" and not first["accepted"]
    assert second["action"] == "width:0.5000" and second["accepted"] and second["latency_ratio"] == pytest.approx(0.4)
    assert 0.2 < second["macs_ratio"] < 0.35 and result["plan"] == ["width:0.5000"]
    assert pruned.stem[0].out_channels == 8


def test_budget_picks_the_least_damaging_candidate_that_reaches_it(digits):
    pruned, result = prune_model(artifact(small_resnet()), digits, get_target("cpu"),
                                 fast(steps=2, depth=True, latency_budget_ratio=0.6), meter=CallableLatency(macs_latency))
    step = result["steps"][1]
    kinds = {c["action"].split(":")[0] for c in step["candidates"]}
    assert kinds == {"width", "depth"} and step["accepted"]
    reaching = [c for c in step["candidates"] if c["ratio_to_input"] <= 0.6 ** 0.5 + 1e-9]
    assert step["action"] == min(reaching, key=lambda c: c["damage_kl"])["action"]
    assert result["budget_met"] is True and result["latency"]["ratio"] <= 0.6


def test_an_input_already_within_the_budget_is_passed_through_without_training(digits):
    """A pass with nothing to do finishes at once and says why (issue 20): no pruning step, no recovery epochs,
    one timing of the input, the weights untouched."""
    calls, messages = [], []
    meter = CallableLatency(lambda m: calls.append(1) or macs_latency(m))
    model = small_resnet()
    budget = 2 * macs_latency(model)
    pruned, result = prune_model(artifact(model), digits, get_target("cpu"), PruneConfig(steps=3, latency_budget_ms=budget, final_epochs=2.0),
                                 meter=meter, progress=messages.append)
    assert result["plan"] == [] and len(result["steps"]) == 1 and result["budget_met"] is True
    assert "nothing pruned" in result["final_recovery"]["skipped"] and len(calls) == 1  # timed once, not re-timed
    assert any("nothing to prune: the input already meets the budget" in m for m in messages)
    assert not any("final recovery" in m for m in messages)
    assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), model.state_dict().values()))


def test_unreachable_budget_reports_the_best_reached(digits):
    _, result = prune_model(artifact(small_resnet()), digits, get_target("cpu"), fast(steps=1, ratio=0.25, latency_budget_ms=1e-6),
                            meter=CallableLatency(macs_latency))
    assert result["budget_met"] is False and result["latency"]["ratio"] < 1.0 and result["plan"] == ["width:0.2500"]


def test_fake_quantized_input_is_refused_with_the_pass_order(digits):
    model = zoo.tiny_cnn(width=8).train()
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    qat = torch.ao.quantization.prepare_qat(model)
    assert find_quantizer(qat) is not None and find_quantizer(zoo.tiny_cnn()) is None
    with pytest.raises(UserInputError, match=r"prune the float model first, then quantize \(pass order: prune -> quantize\)"):
        prune_model(artifact(qat), digits, get_target("cpu"), fast(), meter=CallableLatency(macs_latency))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_the_open_interval_is_refused(ratio):
    with pytest.raises(UserInputError, match=r"--ratio must be in \(0, 1\)"):
        PruneConfig(ratio=ratio)


def test_a_layer_torch_pruning_cannot_follow_is_named(digits):
    class ChannelOffset(nn.Module):
        """Adds a per-channel buffer with a hard-coded channel count: invisible to the dependency graph."""

        def __init__(self):
            super().__init__()
            self.register_buffer("offset", torch.zeros(1, 16, 1, 1))

        def forward(self, x):
            return x + self.offset

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), ChannelOffset(), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    with pytest.raises(UserInputError, match=r"pruning broke the model at layer '2' \(ChannelOffset\)"):
        prune_model(artifact(model), digits, get_target("cpu"), fast(), meter=CallableLatency(macs_latency))


def test_layer_distilled_pruned_model_recovers_and_reloads_identically(tmp_path, digits):
    """The digits teacher, half its channels and one block removed, recovers on real data; model.pt rebuilds it exactly."""
    teacher = load_model(DIGITS_TEACHER)
    cfg = PruneConfig(plan=("width:0.5", "depth:stages.1.1"), recover_epochs=0.5, final_epochs=1, teacher_forced=True,
                      profile_rounds=1, final_rounds=1)
    result = prune(teacher, digits, get_target("cpu"), cfg, tmp_path, meter=CallableLatency(macs_latency))
    assert result["pruned"]["removed_blocks"] == ["stages.1.1"] and result["macs_ratio"] < 0.25
    assert result["steps"][2]["teacher_forced"] == {"block": "stages.1.0", "interval": ["stages.1.0", "stages.1.1"]}
    assert result["steps"][2]["recovery"]["mean_teacher_forced"] > 0 and result["steps"][1]["recovery"]["mean_layer"] > 0
    assert result["pruned"]["eval_accuracy"] >= 0.85  # teacher 98.6%; chance 10%
    reloaded = load_model(tmp_path / "model.pt")  # weights-only load, structure rebuilt from the record
    assert isinstance(reloaded.module.get_submodule("stages.1.1"), nn.Identity)
    assert reloaded.module.stem[0].out_channels == 16 and reloaded.metadata["structure"]["removed"] == ["stages.1.1"]
    x, _ = digits.batch("eval", 64)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["pruned"]["eval_accuracy"] == result["pruned"]["eval_accuracy"]
    from squeeze.measure.accuracy import accuracy, torch_predictions

    preds, labels = torch_predictions(reloaded.module, digits.loader("eval"))
    assert accuracy(preds, labels) == pytest.approx(result["pruned"]["eval_accuracy"])
    assert reloaded.module(x).shape == (64, 10)


def test_cli_unreachable_budget_exits_1_and_still_writes_the_best(tmp_path, cli):
    out = tmp_path / "prune"
    result = cli("prune", DIGITS_TEACHER, "--data", "digits", "--target", "cpu", "--latency-budget", "1us", "--steps", "1",
                 "--candidates", "1", "--recover-epochs", "0.2", "--final-epochs", "0", "--exporter", "legacy", "--out", out, "--json")
    assert result.code == 1, result.stderr
    assert "latency budget not met" in result.stderr
    doc = result.json()
    assert doc["budget_met"] is False and doc["latency"]["kind"] == "measured" and doc["latency"]["input_stats"]["runtime"] == "onnxruntime"
    step = doc["steps"][1]
    assert step["accepted"] == (step["candidates"][0]["ratio_to_current"] <= 0.98)  # the no-regression rule, on real timings
    assert (out / "model.pt").exists() and json.loads((out / "result.json").read_text())["budget_met"] is False
    assert load_model(out / "model.pt").module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_cli_bad_ratio_exits_2_and_writes_nothing(tmp_path, cli):
    out = tmp_path / "prune"
    result = cli("prune", DIGITS_TEACHER, "--data", "digits", "--ratio", "1.5", "--out", out)
    assert result.code == 2 and result.stderr.count("\n") == 1 and "--ratio must be in (0, 1)" in result.stderr
    assert not out.exists()
