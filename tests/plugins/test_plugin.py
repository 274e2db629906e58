"""A third-party pass and target, each one file plus one entry point, in a package squeeze has never
seen: installed (as a distribution on the path) at test time and run through `squeeze compress`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from squeeze import zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint

PLUGIN = '''
"""squeeze_demo_plugin: magnitude sparsification (a pass) and a one-thread ORT CPU target."""
import copy
from dataclasses import dataclass

import torch

from squeeze.io.artifacts import ModelArtifact
from squeeze.passes.base import PassBase, Requires
from squeeze.targets.base import Availability, QuantRules, TargetBase
from squeeze.targets.ort_runtime import profile_session


@dataclass(frozen=True)
class SparsifyConfig:
    sparsity: float = 0.5  # fraction of each weight tensor's smallest magnitudes set to zero


class SparsifyPass(PassBase):
    name = "sparsify"
    Config = SparsifyConfig
    input_kind = ModelArtifact
    output_kind = ModelArtifact
    requires = Requires(data=True, logits=True)
    produces_stage = True

    def run(self, ctx, inp, cfg):
        model = copy.deepcopy(inp.module)
        zeroed = 0
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    w = m.weight
                    k = int(cfg.sparsity * w.numel())
                    if k:
                        cut = w.abs().flatten().kthvalue(k).values
                        zeroed += int((w.abs() <= cut).sum())
                        w[w.abs() <= cut] = 0.0
        ctx.results[self.name] = {"zeroed_weights": zeroed, "sparsity": cfg.sparsity}
        return ModelArtifact(model, inp.input_spec, "sparsified", "module", "", dict(inp.metadata),
                             [*inp.provenance, {"pass": self.name}])


class OneThreadCpu(TargetBase):
    name = "demo-cpu"
    description = "ONNX Runtime CPU, one thread (a plugin target)"
    quant_rules = QuantRules(backend="torch-fx", signed_activations=False, symmetric_activations=False,
                             zero_point_must_be_zero=False, weight_max_int=63, quantized_bias=True)
    channel_multiple = 8

    def available(self):
        return Availability(True, "onnxruntime on this machine, one intra-op thread")

    def profile(self, art, spec):
        import dataclasses

        return profile_session(self.name, art, dataclasses.replace(spec, threads=1), ["CPUExecutionProvider"])
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A package plus its dist-info (entry points): what `pip install` would leave on the path."""
    root = tmp_path_factory.mktemp("site")
    (root / "squeeze_demo_plugin").mkdir()
    (root / "squeeze_demo_plugin" / "__init__.py").write_text(PLUGIN)
    info = root / "squeeze_demo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: squeeze-demo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [squeeze.passes]
        sparsify = squeeze_demo_plugin:SparsifyPass

        [squeeze.targets]
        demo-cpu = squeeze_demo_plugin:OneThreadCpu
    """))
    return root


def test_a_plugin_pass_and_target_run_through_compress(plugin_path, tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(zoo.tiny_cnn(1, 10, width=16).eval(), teacher, arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 16},
                    input_spec=InputSpec((1, 1, 8, 8)), metadata={"dataset": "digits", "split": {"seed": 0}})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("version: 1\npasses:\n  - sparsify: {sparsity: 0.3}\n  - export\n  - profile: {spec: {iterations: 20}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "squeeze", "compress", str(teacher), "--recipe", str(recipe), "--target", "demo-cpu",
                          "--data", "digits", "--out", str(out), "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["stage"] == "sparsify")  # measured as a stage, from its declaration
    assert stage["latency"]["measured"] and stage["latency"]["threads"] == 1 and stage["accuracy"] is not None
    assert manifest["target"]["name"] == "demo-cpu" and manifest["latency"]["threads"] == 1
    assert manifest["pass_results"]["sparsify"]["zeroed_weights"] > 0
    listing = subprocess.run([sys.executable, "-m", "squeeze", "targets", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert "demo-cpu" in {row["name"] for row in json.loads(listing.stdout)}


def test_a_plugin_may_not_shadow_a_built_in(plugin_path, tmp_path):
    shadow = tmp_path / "shadow-1.0.dist-info"
    shadow.mkdir()
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow\nVersion: 1.0\n")
    (shadow / "entry_points.txt").write_text("[squeeze.passes]\nprune = squeeze_demo_plugin:SparsifyPass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(plugin_path)])}
    run = subprocess.run([sys.executable, "-m", "squeeze", "compress", "x.pt", "--print-recipe"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 2 and "would shadow squeeze's built-in pass" in run.stderr
