"""Student search: proxies on tiny nets, the DisWOT terms, evolution, budgets, errors, CLI, and the hand-off to distill."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from squeeze.run import pipeline
from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.io.data import SplitConfig, load_data
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.modelio import load_model
from squeeze.passes.base import Context
from squeeze.passes.distill.pass_ import DistillConfig, DistillPass
from squeeze.passes.search import SearchConfig, SearchPass, proxies, search
from squeeze.passes.search.evolution import Candidate, EvolutionConfig, evolve
from squeeze.passes.search.pass_ import fixed_batch
from squeeze.passes.search.spaces import Gene, SearchSpace, convnet_space, get_space, mobilenetv2_space, resnet_space
from squeeze.io.students import build_student, load_student_spec
from squeeze.targets import get_target
from squeeze.targets.base import Availability, LatencyStats, TargetBase

ROOT = Path(__file__).resolve().parents[2]
DIGITS_TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"
MNIST_TEACHER = ROOT / "samples" / "teachers" / "resnet_mnist.pt"
SMALL = {"stem_width": 8, "stem_stride": 1, "widths": [8, 16], "blocks": [1, 1], "kernels": [3, 3], "strides": [2, 2]}
LARGER = {"stem_width": 16, "stem_stride": 1, "widths": [32, 64], "blocks": [2, 2], "kernels": [3, 3], "strides": [2, 2]}


@pytest.fixture(scope="module")
def digits():
    teacher = load_model(DIGITS_TEACHER)
    bundle = load_data("digits", SplitConfig(seed=0))
    x, y = fixed_batch(bundle, "calibration", 64, seed=0)
    return teacher, bundle, x, y


def resnet(kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_student("squeeze.passes.search.spaces:build_resnet", kwargs, 1, 10)[0]


def fast_config(**overrides) -> SearchConfig:
    base = {"population": 6, "iterations": 8, "tournament": 3, "top_k": 3, "profile_iterations": 10, "profile_warmup": 2}
    return SearchConfig(**{**base, **overrides})


# -- proxies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", proxies.PROXIES)
def test_each_proxy_scores_tiny_nets_deterministically(digits, name):
    teacher, _, x, y = digits
    ref = proxies.teacher_reference(teacher.module, x, y) if name in proxies.NEEDS_TEACHER else None
    inputs = proxies.ProxyInputs(x, y, (1, 1, 8, 8), ref)
    small, small_again, larger = (proxies.score(name, resnet(k, seed=3), inputs)[0] for k in (SMALL, SMALL, LARGER))
    assert all(v == v and abs(v) != float("inf") for v in (small, larger)), (small, larger)
    assert small == small_again  # same architecture + seed -> the same score, bit for bit
    if name in ("params", "macs", "synflow"):
        assert larger > small  # these grow with size (SynFlow sums saliency over every weight)
    if name in proxies.DISWOT_PROXIES:
        assert -8.0 <= small <= 0.0 and -8.0 <= larger <= 0.0  # each term is a mean squared distance of unit rows


def test_diswot_scores_a_clone_of_the_teacher_above_random_students(digits):
    teacher, _, x, y = digits
    ref = proxies.teacher_reference(teacher.module, x, y)
    inputs = proxies.ProxyInputs(x, y, (1, 1, 8, 8), ref)
    clone, clone_terms = proxies.score("diswot", copy.deepcopy(teacher.module), inputs)
    same_arch_random = proxies.score("diswot", proxies.random_teacher(teacher.module, seed=1), inputs)[0]
    others = [proxies.score("diswot", resnet(k, seed=s), inputs)[0] for k in (SMALL, LARGER) for s in (0, 1)]
    assert clone > max(same_arch_random, *others) + 0.2, (clone, same_arch_random, others)
    assert clone_terms["semantic"] < 0.15 and clone_terms["relation"] < 0.05  # only BN batch vs running statistics differs


def test_teacher_reference_is_computed_once_and_does_not_accumulate(digits):
    teacher, _, x, y = digits
    first = proxies.teacher_reference(teacher.module, x, y)
    for _ in range(2):
        proxies.score("diswot", resnet(SMALL), proxies.ProxyInputs(x, y, (1, 1, 8, 8), first))
    again = proxies.teacher_reference(teacher.module, x, y)
    assert torch.equal(first.semantic, again.semantic) and torch.equal(first.relation, again.relation)
    assert all(p.grad is None for p in teacher.module.parameters())  # autograd.grad: nothing left in .grad


def _permuted_copy(net: nn.Sequential, perm: torch.Tensor) -> nn.Sequential:
    """The same function with its penultimate channels reordered."""
    other = copy.deepcopy(net)
    conv, bn, fc = other[0], other[1], other[5]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[perm])
        bn.weight.copy_(bn.weight[perm])
        bn.bias.copy_(bn.bias[perm])
        fc.weight.copy_(fc.weight[:, perm])
    return other


@pytest.mark.parametrize("width", [8, 24, 128])
def test_semantic_term_is_width_agnostic_and_channel_order_invariant(digits, width):
    teacher, _, x, y = digits
    ref = proxies.teacher_reference(teacher.module, x, y)  # the teacher's penultimate width is 128
    torch.manual_seed(width)
    net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(width, 10))
    terms = proxies.diswot_terms(net, x, y, ref)
    assert 0.0 < terms["semantic"] < 4.0 and 0.0 < terms["relation"] < 4.0
    permuted = proxies.diswot_terms(_permuted_copy(net, torch.randperm(width)), x, y, ref)
    assert permuted["semantic"] == pytest.approx(terms["semantic"], abs=1e-6)  # float32 sums in another order
    assert permuted["relation"] == pytest.approx(terms["relation"], abs=1e-6)


def test_teacher_without_logits_is_refused_naming_the_proxies_that_need_them(digits):
    _, bundle, _, _ = digits
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    art = ModelArtifact(features, InputSpec((1, 1, 8, 8)), "features", "module", "")
    with pytest.raises(UserInputError, match=r"not class logits \[B, C\]; proxy diswot needs logits \(proxies that need logits: "
                                             r"diswot, diswot-semantic, snip, grad-norm, zico\)"):
        search(art, bundle, get_target("cpu"), fast_config(proxy="diswot"))
    with pytest.raises(UserInputError, match=r"not class logits \[B, C\]: search builds classifier students"):
        search(art, bundle, get_target("cpu"), fast_config())  # the default ranker (params + few-shot) too


# -- spaces and evolution ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [resnet_space, mobilenetv2_space, convnet_space])
def test_space_samples_build_and_round_trip_through_the_student_json(tmp_path, make):
    space = make()
    rng = random.Random(0)
    for genome in [space.smallest(), space.sample(rng), space.mutate(space.sample(rng), rng)]:
        spec_file = tmp_path / "student.json"
        spec_file.write_text(json.dumps(space.spec(genome)))
        arch, kwargs = load_student_spec(str(spec_file))  # what `squeeze distill --student` does
        assert arch.startswith("squeeze.")
        module, _ = build_student(arch, kwargs, 1, 10)
        assert module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("space_name, kwargs", [
    ("resnet", {"stem_width": 16, "stem_stride": 1, "widths": [16, 32, 64], "blocks": [1, 1, 1], "kernels": [3, 3, 3], "strides": [1, 2, 2]}),
    ("resnet", {"stem_width": 16, "stem_stride": 1, "widths": [16, 32, 64], "blocks": [2, 2, 2], "kernels": [3, 3, 3], "strides": [1, 2, 2]}),
    ("resnet", {"stem_width": 16, "stem_stride": 1, "widths": [16, 32, 64], "blocks": [3, 3, 3], "kernels": [3, 3, 3], "strides": [1, 2, 2]}),
    ("convnet", {"stem_width": 24, "widths": [64, 256, 256], "convs": [2, 2, 2]}),
])
def test_the_standard_family_points_are_in_the_spaces(space_name, kwargs):
    """CIFAR ResNet-8/14/20 (He et al.: 3 stages of 1/2/3 basic blocks at 16/32/64) and the airbench layout are
    architectures of the built-in spaces, exactly (issue 19: a sane space)."""
    space = get_space(space_name)
    genome = {g.name: g.options[0] for g in space.genes}
    n = len(kwargs["widths"])
    genome["stages"] = n
    for key, value in kwargs.items():
        if isinstance(value, list):
            singular = {"widths": "width", "blocks": "blocks", "kernels": "kernel", "strides": "stride", "convs": "convs"}[key]
            for i, v in enumerate(value, 1):
                genome[f"{singular}{i}"] = v
        else:
            genome[key] = value
    assert all(genome[g.name] in g.options for g in space.genes), genome
    assert space.valid(genome) and space.decode(genome) == kwargs


@pytest.mark.parametrize("make", [resnet_space, convnet_space])
def test_stage_widths_never_shrink_with_depth_in_samples_and_mutations(make):
    """Issue 19's sane space: searches had proposed widths like 48-24-96; the spaces now refuse them."""
    space, rng = make(), random.Random(1)
    genomes = [space.sample(rng) for _ in range(200)]
    genomes += [space.mutate(g, rng) for g in genomes]
    for genome in genomes:
        widths = space.decode(genome)["widths"]
        assert widths == sorted(widths), widths
    shrinking = {**space.smallest(), "stages": 2, "width1": 48, "width2": 24}
    assert not space.valid(shrinking)


@pytest.mark.parametrize("make", [resnet_space, mobilenetv2_space, convnet_space])
def test_a_space_aligned_to_a_target_builds_only_whole_channel_blocks(make):
    """A target's channel_multiple (16 on AVX-512 CPUs) reaches every width search can propose, derived ones included."""
    space, rng = make().aligned(16), random.Random(2)
    assert make().aligned(1) == make() and space.channel_multiple == 16
    for genome in [space.smallest(), *(space.sample(rng) for _ in range(20))]:
        module = space.build(genome, 3, 10)
        se_convs = {id(c) for m in module.modules() if type(m).__name__ == "SqueezeExcite" for c in m.modules()}
        widths = [c.out_channels for c in module.modules() if isinstance(c, torch.nn.Conv2d) and id(c) not in se_convs]
        assert widths and all(w % 16 == 0 for w in widths), (space.spec(genome), widths)


def test_widths_with_no_aligned_option_round_up():
    space = SearchSpace("odd", "squeeze.passes.search.spaces:build_resnet", (Gene("stem_width", (8, 24, 40), "channels"),),
                        lambda g: {"stem_width": g["stem_width"]})
    assert space.aligned(16).genes[0].options == (16, 32, 48)


def test_mobilenetv2_width_multipliers_of_the_family_are_in_the_space():
    assert {0.35, 0.5} <= set(next(g for g in mobilenetv2_space().genes if g.name == "width_mult").options)


def test_user_space_and_unknown_names():
    assert get_space("squeeze.passes.search.spaces:resnet_space").name == "resnet"
    with pytest.raises(UserInputError, match="unknown search space 'vgg'; choose from resnet, mobilenetv2, convnet or give your own as pkg.mod:space"):
        get_space("vgg")
    with pytest.raises(UserInputError, match="not a squeeze.passes.search.spaces.SearchSpace"):
        get_space("squeeze.zoo:tiny_cnn")
    with pytest.raises(UserInputError, match="unknown proxy 'zen'; choose from diswot, diswot-semantic, diswot-relation, nwot, synflow, snip"):
        SearchConfig(proxy="zen")


def test_evolution_climbs_beyond_random_sampling_and_is_seeded():
    """Toy objective: how many genes match a hidden 4-stage target; stem width 32 is over 'budget'."""
    space = resnet_space()
    target = space.sample(random.Random(99)) | {"stages": 4, "stem_width": 24}

    def evaluate(genome):
        n = genome["stages"]
        active = [g.name for g in space.genes if not (g.name[-1].isdigit() and int(g.name[-1]) > n)]
        feasible = genome["stem_width"] != 32
        matches = float(sum(genome[name] == target[name] for name in active))
        return Candidate(space.key(genome), genome, space.spec(genome), feasible, matches if feasible else None,
                         "" if feasible else "params", {"params": 0, "macs": 0})

    cfg = EvolutionConfig(population=10, iterations=200, tournament=4, seed=0)
    events = evolve(space, evaluate, cfg)
    initial = max(e.candidate.score for e in events if e.step == 0 and e.candidate.feasible)
    final = max(e.candidate.score for e in events if e.candidate.feasible)
    assert final >= initial + 4, (initial, final)
    assert any(not e.candidate.feasible for e in events)  # rejections happened and never scored
    assert all(e.candidate.score is None for e in events if not e.candidate.feasible)
    assert [e.candidate.key for e in events] == [e.candidate.key for e in evolve(space, evaluate, cfg)]  # seeded


# -- the search ---------------------------------------------------------------------------------------


def test_search_is_reproducible_with_a_seed_and_caches_latency(digits, tmp_path):
    teacher, bundle, _, _ = digits
    cfg = fast_config(proxy="diswot", fewshot_top=0, params_budget=60_000, latency_cache=str(tmp_path / "latency.json"))
    messages: list[str] = []
    first = search(teacher, bundle, get_target("cpu"), cfg, progress=messages.append)
    second = search(teacher, bundle, get_target("cpu"), cfg)
    assert first.best.spec == second.best.spec
    # the live view's k/n progress and best-so-far, up to the last step
    steps = [m for m in messages if m.startswith("search step ")]
    assert steps and steps[-1].startswith(f"search step {cfg.iterations}/{cfg.iterations}, best diswot score")
    assert [(h["spec"], h["score"]) for h in first.history] == [(h["spec"], h["score"]) for h in second.history]
    assert first.result["latency_cache"]["misses"] > 0
    assert second.result["latency_cache"]["misses"] == 0 and second.result["latency_cache"]["hits"] > 0
    assert first.result["student"]["params"] <= 60_000 and first.result["within_budget"]["params"]
    assert first.result["student"]["latency"]["kind"] == "measured"
    assert first.result["proxy"]["batch"] == {"split": "calibration", "size": 64, "seed": 0, "labels": "labels", "classes_present": 10}
    cache = json.loads((tmp_path / "latency.json").read_text())
    entry = next(iter(cache["entries"].values()))
    assert entry["target"] == "cpu" and entry["runtime"] == "onnxruntime" and entry["measured"] is True
    torch.manual_seed(0)  # what `squeeze distill --student student.json --seed 0` builds
    expected = build_student(first.best.spec["arch"], first.best.spec["kwargs"], 1, 10)[0].state_dict()
    produced = first.build_student(0).state_dict()
    assert all(torch.equal(expected[k], produced[k]) for k in expected) and expected.keys() == produced.keys()
    other = search(teacher, bundle, get_target("cpu"), SearchConfig(**{**first.result["config"], "seed": 1}))
    assert [h["spec"] for h in other.history] != [h["spec"] for h in first.history]


def test_a_pt2_teacher_gives_diswot_the_same_reference_and_the_search_the_same_student(digits):
    """The .pt2 form of a teacher (a torch.export graph, no nn.Linear to hook) is read node by node (issue 17)."""
    teacher, bundle, x, y = digits
    graph = load_model(DIGITS_TEACHER.with_suffix(".pt2"))
    ref_module, ref_graph = proxies.teacher_reference(teacher.module.eval(), x, y), proxies.teacher_reference(graph.module, x, y)
    for term in ("semantic", "relation", "relation_pooled"):
        assert torch.allclose(getattr(ref_module, term), getattr(ref_graph, term), atol=1e-9), term
    cfg = fast_config(params_budget=60_000, iterations=4)
    assert search(graph, bundle, get_target("cpu"), cfg).best.spec == search(teacher, bundle, get_target("cpu"), cfg).best.spec
    with pytest.raises(UserInputError, match="--teacher-init random needs"):
        proxies.teacher_reference(graph.module, x, y, init="random")
    scripted = torch.jit.script(teacher.module.eval())
    with pytest.raises(UserInputError, match="cannot tap a TorchScript teacher"):
        proxies.teacher_reference(scripted, x, y)


def test_log_rank_aggregation_ranks_each_proxy_and_sums_log_ranks():
    """AZ-NAS's aggregation: ranks ascending per proxy (ties share their mean rank), sum of log(rank / n)."""
    from squeeze.passes.search.zero_cost import log_rank_aggregate

    totals = log_rank_aggregate([[1.0, 2.0, 3.0, 3.0], [4.0, 1.0, 2.0, 3.0]])
    expected = [math.log(1 / 4) + math.log(4 / 4), math.log(2 / 4) + math.log(1 / 4), math.log(3.5 / 4) + math.log(2 / 4),
                math.log(3.5 / 4) + math.log(3 / 4)]
    assert totals == pytest.approx(expected)
    # a candidate last on any one proxy is pushed below one that is middling on both
    assert log_rank_aggregate([[10.0, 5.0, 6.0], [0.0, 5.0, 4.0]])[0] < log_rank_aggregate([[10.0, 5.0, 6.0], [0.0, 5.0, 4.0]])[2]


def test_few_shot_tier_reranks_the_shortlist_by_short_distillation(digits, tmp_path):
    """The shortlist (zero-cost order) is distilled a few steps each; the pick is the best after that, all recorded."""
    teacher, bundle, _, _ = digits
    cfg = fast_config(proxy="params", params_budget=60_000, fewshot_top=3, fewshot_steps=40, population=4, iterations=4,
                      latency_cache=str(tmp_path / "lat.json"))
    messages: list[str] = []
    outcome = search(teacher, bundle, get_target("cpu"), cfg, progress=messages.append)
    shot = outcome.result["fewshot"]
    assert shot["shortlist"] == 3 and shot["steps"] == 40 and len(shot["candidates"]) == 3
    accuracies = [c["accuracy"] for c in shot["candidates"]]
    assert accuracies == sorted(accuracies, reverse=True) and outcome.best.key == shot["candidates"][0]["key"]
    assert max(accuracies) > 0.3  # 40 steps of KD on real digits learn something (chance is 0.1)
    assert sorted(c["zero_cost_rank"] for c in shot["candidates"]) == [1, 2, 3]
    assert any(m.startswith("few-shot tier: 3 candidates") for m in messages)
    assert outcome.result["timings"]["fewshot_s"] > 0


def test_the_default_ranker_is_params_then_a_few_shot_tier_scaled_to_the_data(digits, tmp_path):
    """Issue 19's evidence-picked default; the short run's length follows the train split; no data, no tier (said)."""
    from squeeze.passes.search import fewshot

    default = SearchConfig()
    assert (default.proxy, default.fewshot_top, default.fewshot_steps, default.fewshot_rank_by) == ("params", 8, 0, "accuracy")
    assert [fewshot.auto_steps(n) for n in (1_000, 7_500, 20_000, 47_500)] == [50, 50, 117, 200]
    teacher, bundle, _, _ = digits
    cfg = fast_config(params_budget=60_000, population=8, iterations=8, top_k=3, latency_cache=str(tmp_path / "lat.json"))
    outcome = search(teacher, bundle, get_target("cpu"), cfg)
    shot = outcome.result["fewshot"]
    assert shot["steps"] == fewshot.auto_steps(len(bundle.train)) and 3 < shot["shortlist"] <= 8
    assert len(outcome.result["top_k"]) == 3 and outcome.best.key == shot["candidates"][0]["key"]
    messages: list[str] = []
    no_data = search(teacher, None, get_target("cpu"), cfg, progress=messages.append)
    assert "skipped" in no_data.result["fewshot"] and "fewshot_s" not in no_data.result["timings"]
    assert any(m.startswith("few-shot tier skipped (no --data)") for m in messages)


def test_a_torchscript_teacher_searches_with_a_proxy_that_needs_no_taps(digits, tmp_path):
    """TorchScript cannot be tapped for DisWOT, but it runs forward: params + the few-shot tier take it (issue 17)."""
    teacher, bundle, _, _ = digits
    path = tmp_path / "teacher.ts"
    torch.jit.save(torch.jit.script(copy.deepcopy(teacher.module).eval()), str(path))
    scripted = load_model(path, input_shape="1x1x8x8")
    cfg = fast_config(proxy="params", params_budget=60_000, fewshot_top=3, fewshot_steps=30, population=4, iterations=4,
                      latency_cache=str(tmp_path / "lat.json"))
    from_script, from_module = (search(t, bundle, get_target("cpu"), cfg).result["fewshot"]["candidates"] for t in (scripted, teacher))
    # the same shortlist, each candidate learning from the scripted teacher's logits (TorchScript runs them in fp32
    # where the eager teacher runs under bf16 autocast, so the short runs differ by rounding, not by what they learn)
    assert {c["key"] for c in from_script} == {c["key"] for c in from_module}
    assert min(c["accuracy"] for c in from_script) > 0.5, from_script


class _PredictingTarget(TargetBase):
    name = "fake-edge"
    description = "a target that cannot run here but predicts latency from the ONNX file"
    channel_multiple = 16

    def available(self) -> Availability:
        return Availability(False, "no device attached", {"runtime_version": "fake 1.0"})

    def predict(self, onnx_art, spec) -> LatencyStats:
        ms = onnx_art.path.stat().st_size / 1e6  # 1 ms per MB: a stand-in for a roofline model
        return LatencyStats("fake-edge", "roofline", "fake 1.0", [], spec.batch_size, [1], 0, 2, 1, ms, ms, ms, ms, 0.0, ms, ms, 0.0,
                            1000.0 / ms, measured=False)

    def can_predict(self) -> bool:
        return True


class _SilentTarget(_PredictingTarget):
    def can_predict(self) -> bool:
        return False


def test_predicted_latency_is_labelled_predicted_and_a_target_without_predictor_is_refused(digits, tmp_path):
    teacher, bundle, _, _ = digits
    cfg = fast_config(latency_budget_ms=0.2, population=3, iterations=2, top_k=2, latency_cache=str(tmp_path / "latency.json"))
    outcome = search(teacher, bundle, _PredictingTarget(), cfg)
    st = outcome.result["student"]
    assert st["latency"]["kind"] == "predicted" and st["latency"]["measured"] is False and st["latency_search"]["p50_ms"] <= 0.2
    assert outcome.result["target"]["latency"] == "predicted" and outcome.result["target"]["channel_multiple"] == 16
    # the target's kernel block reaches every candidate: no 8- or 24-channel layer was even proposed
    assert all(w % 16 == 0 for h in outcome.history for w in [h["spec"]["kwargs"]["stem_width"], *h["spec"]["kwargs"]["widths"]])
    assert {h["latency_kind"] for h in outcome.history if h["latency_kind"]} == {"predicted"}
    with pytest.raises(TargetUnavailableError, match="cannot measure latency here \\(no device attached\\) and has no latency predictor"):
        search(teacher, bundle, _SilentTarget(), cfg)


def test_search_pass_hands_an_untrained_student_to_distill(digits, tmp_path):
    teacher, bundle, _, _ = digits
    steps = [pipeline.Step(SearchPass(), fast_config(params_budget=30_000, latency_cache=str(tmp_path / "lat.json"))),
             pipeline.Step(DistillPass(), DistillConfig(epochs=3, batch_size=64))]
    ctx = Context(run_dir=tmp_path, target=get_target("cpu"), data=bundle, teacher=teacher)
    student, records = pipeline.run(steps, ctx, teacher)
    assert [r["name"] for r in records] == ["search", "distill"]
    chosen = json.loads((tmp_path / "search" / "student.json").read_text())
    assert ctx.results["distill"]["student"]["arch"] == chosen["arch"] and ctx.results["distill"]["student"]["kwargs"] == chosen["kwargs"]
    assert ctx.results["distill"]["student"]["params"] <= 30_000
    assert ctx.results["distill"]["eval"]["student_accuracy"] > 0.4  # digits, 3 short epochs: far above chance (0.1)


# -- CLI ------------------------------------------------------------------------------------------------


def assert_one_line_error(result, fragment: str, after_progress: bool = False):
    """Exit 2 and one `error:` line; progress lines before it only where work had started (`after_progress`)."""
    assert result.code == 2, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and fragment in errors[0], result.stderr
    assert after_progress or len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_search_on_the_sample_teacher_meets_the_latency_budget(cli, tmp_path):
    out = tmp_path / "search"
    result = cli("search", MNIST_TEACHER, "--data", "mnist", "--target", "cpu", "--space", "resnet", "--latency-budget", "0.5ms",
                 "--population", "4", "--iterations", "4", "--top-k", "3", "--fewshot-top", "2", "--fewshot-steps", "10", "--latency-cache", tmp_path / "lat.json", "--out", out, "--json")
    assert result.code == 0, result.stderr
    info = result.json()
    st = info["student"]
    assert st["latency_search"]["p50_ms"] <= 0.5 and st["latency_search"]["kind"] == "measured" and info["within_budget"]["latency_search"]
    assert st["macs"] < info["teacher"]["macs"] and len(info["top_k"]) == 3
    assert json.loads((out / "student.json").read_text()) == st["spec"]
    assert json.loads((out / "result.json").read_text())["student"] == st
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == info["search"]["proposals"] and history[0]["origin"] == "smallest"


def test_cli_student_json_is_accepted_by_distill(cli, tmp_path):
    out = tmp_path / "search"
    found = cli("search", DIGITS_TEACHER, "--data", "digits", "--params-budget", "20k", "--population", "4", "--iterations", "4",
                "--top-k", "2", "--fewshot-top", "2", "--fewshot-steps", "10", "--no-latency-cache", "--out", out)
    assert found.code == 0, found.stderr
    # the human-readable summary: the few-shot tier's column and time, and the next command with the real path
    assert "few-shot acc" in found.stdout and "few-shot tier" in found.stdout and "{out}" not in found.stdout, found.stdout
    spec = json.loads((out / "result.json").read_text())["student"]["spec"]
    trained = cli("distill", DIGITS_TEACHER, "--student", out / "student.json", "--data", "digits", "--epochs", "1",
                  "--out", tmp_path / "distill", "--json")
    assert trained.code == 0, trained.stderr
    used = trained.json()["student"]
    assert used["arch"] == spec["arch"]
    assert {k: v for k, v in used["kwargs"].items() if k not in ("in_channels", "num_classes")} == spec["kwargs"]


def test_cli_impossible_budgets_name_the_smallest_architecture(cli, tmp_path):
    common = ("--data", "digits", "--latency-cache", tmp_path / "lat.json", "--out", tmp_path / "out")
    multiple = get_target("cpu").channel_multiple  # the host's kernel block: 16 with AVX-512, else 8
    smallest = resnet_space().aligned(multiple)
    params_of_smallest = sum(p.numel() for p in smallest.build(smallest.smallest(), 1, 10).parameters())
    where = f"space resnet (widths in blocks of {multiple} channels)"
    latency = cli("search", DIGITS_TEACHER, "--latency-budget", "1us", *common)
    assert_one_line_error(latency, f"latency budget 0.001 ms (p50) is impossible in {where} on cpu: the smallest latency in the space is",
                          after_progress=True)
    params = cli("search", DIGITS_TEACHER, "--params-budget", "100", *common)
    assert_one_line_error(params, f"--params-budget 100 is impossible in {where}: its smallest architecture has {params_of_smallest} parameters",
                          after_progress=True)
    assert not (tmp_path / "out").exists()


def test_cli_unknown_space_and_proxy(cli, tmp_path):
    common = ("--data", "digits", "--out", tmp_path / "out")
    assert_one_line_error(cli("search", DIGITS_TEACHER, "--space", "vgg", *common), "unknown search space 'vgg'; choose from resnet, mobilenetv2")
    assert_one_line_error(cli("search", DIGITS_TEACHER, "--proxy", "zen", *common), "unknown proxy 'zen'; choose from diswot")
    assert not (tmp_path / "out").exists()
