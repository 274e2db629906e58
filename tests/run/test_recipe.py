"""Recipes: typed validation with key paths before any work, order rules, --print-recipe round trip."""

from __future__ import annotations

import pytest
import yaml

from squeeze import api
from squeeze.run.compress import effective_recipe
from squeeze.errors import UserInputError
from squeeze.passes.distill.pass_ import DistillConfig
from squeeze.run.recipe import load_recipe, parse_recipe


def _write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_recipe_builds_typed_configs(tmp_path):
    recipe = load_recipe(_write(tmp_path, """
version: 1
passes:
  - distill: {epochs: 3, loss: kd+dist, temperature: 2, feature_pairs: [[stages.1, stages.1]]}
  - export
  - profile: {spec: {iterations: 50, warmup: 5}}
"""))
    assert recipe.names() == ["distill", "export", "profile"]
    distill = recipe.step("distill").config
    assert isinstance(distill, DistillConfig) and distill.epochs == 3 and distill.temperature == 2.0
    assert distill.feature_pairs == (("stages.1", "stages.1"),)
    assert recipe.step("profile").config.spec.iterations == 50


@pytest.mark.parametrize("text, message", [
    ("passes: [{distill: {epochs: 3, epoch: 4}}]", r"passes\[0\]\.distill\.epoch: unknown key; DistillConfig takes epochs, loss"),
    ("passes: [{distill: {epochs: three}}]", r"passes\[0\]\.distill\.epochs: expected an integer, got 'three'"),
    ("passes: [{distill: {label_free: 1}}]", r"passes\[0\]\.distill\.label_free: expected true or false"),
    ("passes: [export, {profile: {spec: {iterations: 1}}}]", r"passes\[1\]\.profile\.spec: profile needs .*iterations >= 2"),
    ("passes: [{distill: {epochs: 0}}]", r"passes\[0\]\.distill: --epochs and --batch-size must be >= 1"),
    ("passes: [{distil: {}}]", r"passes\[0\]: unknown pass 'distil'; known passes: search, distill"),
    ("passes: [profile, export]", r"'profile' needs an ONNX model: add a pass that makes one \(quantize or export\)"),
    ("passes: [export, export]", r"'export' appears 2 times"),
    ("passes: [export, distill]", r"passes\[1\]\.distill: takes a ModelArtifact but the pass before gives a OnnxArtifact"),
    ("passes: []", r"passes: expected a non-empty list"),
    ("version: 2\npasses: [export]", r"version: this squeeze reads recipe version 1"),
    ("passes: [export]\ntarget: cpu", r"target: unknown key"),
    ("passes: [{export: {opset: 9}}]", r"passes\[0\]\.export: --opset must be between 17 and 23"),
    ("passes: [{export: 3}]", r"passes\[0\]\.export: expected a mapping of config keys"),
    ("- export", r"a recipe is a mapping"),
])
def test_bad_recipes_name_the_key_path(tmp_path, text, message):
    with pytest.raises(UserInputError, match=message):
        load_recipe(_write(tmp_path, text))


def test_impossible_orders_are_refused_before_any_pass_is_imported():
    with pytest.raises(UserInputError, match="'search' must come first"):
        parse_recipe({"passes": ["export", "search"]}, "r.yaml")
    with pytest.raises(UserInputError, match=r"'prune' must come before 'quantize'.*Torch-Pruning #291"):
        parse_recipe({"passes": ["quantize", "prune", "export"]}, "r.yaml")
    with pytest.raises(UserInputError, match="'profile' needs an ONNX model"):
        parse_recipe({"passes": ["distill", "profile"]}, "r.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="not valid YAML at line 3"):
        load_recipe(_write(tmp_path, "passes:\n  - distill: {epochs: [\n"))
    with pytest.raises(UserInputError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_print_recipe_round_trips_and_applies_overrides(tmp_path):
    text = api.print_recipe("distill", student=True, overrides={"distill": {"epochs": 5, "loss": "kd+dist"}})
    assert text.startswith("# squeeze recipe (effective; from built-in recipe 'distill')")
    reparsed = parse_recipe(yaml.safe_load(text), "printed")
    assert reparsed.to_dict() == effective_recipe("distill", student=True, overrides={"distill": {"epochs": 5, "loss": "kd+dist"}}).to_dict()
    assert reparsed.step("distill").config.epochs == 5 and reparsed.step("distill").config.loss == "kd+dist"
    with pytest.raises(UserInputError, match="distill options.epochs: expected an integer"):
        api.print_recipe("distill", student=True, overrides={"distill": {"epochs": "many"}})
    with pytest.raises(UserInputError, match="recipe has no 'distill' pass"):
        api.print_recipe("export", student=False, overrides={"distill": {"epochs": 5}})


def test_print_recipe_shows_what_the_passes_aim_at_under_a_budget():
    printed = parse_recipe(yaml.safe_load(api.print_recipe("full", latency_budget="0.3ms")), "printed")
    # the gated p90 budget is aimed at with the p50 margin; search aims higher when prune follows it
    assert printed.step("prune").config.latency_budget_ms == pytest.approx(0.3 * 0.85)
    assert printed.step("search").config.latency_budget_ms > printed.step("prune").config.latency_budget_ms
    assert parse_recipe(yaml.safe_load(api.print_recipe("full")), "printed").step("prune").config.latency_budget_ms is None
    with pytest.raises(UserInputError):
        api.print_recipe("full", latency_budget="-1ms")


def test_builtin_recipes():
    full = effective_recipe(None, student=False)
    assert full.names() == ["search", "distill", "prune", "quantize", "profile"] and full.source == "built-in recipe 'full'"
    assert effective_recipe("full", student=True).names() == ["distill", "prune", "quantize", "profile"]  # a given student is not searched
    assert effective_recipe("quick", student=False).step("distill").config.epochs == 15
    assert effective_recipe("quick", student=False).step("quantize").config.fallback_to_float
    assert effective_recipe("export", student=False).names() == ["export", "profile"]


def test_cli_print_recipe_and_bad_recipe_exit_codes(cli, tmp_path):
    printed = cli("compress", "samples/teachers/resnet_digits.pt", "--student", "samples/students/tiny_cnn16.json", "--epochs", "2",
                  "--print-recipe")
    assert printed.code == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["passes"][0]["distill"]["epochs"] == 2
    bad = _write(tmp_path, "passes: [{distill: {epochs: -1}}]")
    out = tmp_path / "out"
    result = cli("compress", "samples/teachers/resnet_digits.pt", "--recipe", bad, "--out", out)
    assert result.code == 2 and "passes[0].distill" in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
