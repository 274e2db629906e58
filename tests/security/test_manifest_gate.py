"""`squeeze gate` never passes what failed: the manifest is loaded against its versioned schema,
a malformed field is exit 2 naming its path, and the compress-time verdict binds unless overridden."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import assert_refused
from squeeze import api, zoo
from squeeze.io.artifacts import InputSpec
from squeeze.run.schema import SCHEMA_VERSION
from squeeze.io.modelio import save_checkpoint
from squeeze.targets.base import ProfileSpec


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("manifest")
    torch.manual_seed(0)
    save_checkpoint(zoo.tiny_cnn(1, 10, width=8).eval(), d / "m.pt", arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 8},
                    input_spec=InputSpec((1, 1, 8, 8)), metadata={"dataset": "digits", "split": {"seed": 0}})
    api.compress(d / "m.pt", out=d / "run", recipe="export", data="digits", profile_spec=ProfileSpec(warmup=2, iterations=10))
    return json.loads((d / "run" / "manifest.json").read_text())


def write(tmp_path, manifest) -> str:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return str(path)


@pytest.mark.parametrize("field,value,fragment", [
    (("parity", "passed"), "false", "parity.passed must be true or false"),
    (("parity", "passed"), None, "parity.passed must be true or false"),
    (("latency", "p90_ms"), None, "latency.p90_ms must be a number"),
    (("latency", "p90_ms"), {"ms": 1}, "latency.p90_ms must be a number"),
    (("latency", "p90_ms"), "0.1", "latency.p90_ms must be a number"),
    (("latency", "p90_ms"), -0.5, "latency.p90_ms must be >= 0"),
    (("latency", "p50_ms"), float("nan"), "latency.p50_ms must be finite"),
    (("gate", "verdict"), "PASS", "gate.verdict must be one of"),
    (("accuracy", "output_accuracy"), 1.7, "accuracy.output_accuracy must be <= 1"),
    (("outputs", "model.onnx", "sha256"), "abc", "outputs.model.onnx.sha256 must be a sha256"),
    (("schema_version",), SCHEMA_VERSION + 1, "schema_version 2 is not 1"),
    (("schema_version",), "1", "schema_version must be an integer"),
    (("latency",), "fast", "latency must be an object"),
])
def test_malformed_fields_are_exit_2_naming_the_field(cli, real_manifest, tmp_path, field, value, fragment):
    bad = copy.deepcopy(real_manifest)
    holder = bad
    for key in field[:-1]:
        holder = holder[key]
    holder[field[-1]] = value
    assert_refused(cli("gate", write(tmp_path, bad), "--max-latency-ms", "1s"), fragment)


def test_a_missing_schema_version_is_refused(cli, real_manifest, tmp_path):
    bad = copy.deepcopy(real_manifest)
    del bad["schema_version"]
    assert_refused(cli("gate", write(tmp_path, bad), "--max-latency-ms", "1s"), "schema_version is missing")


def test_the_compress_verdict_binds_unless_overridden(cli, real_manifest, tmp_path):
    failed = copy.deepcopy(real_manifest)
    failed["gate"] = {"verdict": "fail", "checks": [{"check": "latency_p90_ms", "passed": False, "value": 9.0, "limit": 1.0}]}
    path = write(tmp_path, failed)
    result = cli("gate", path, "--max-latency-ms", "1s", "--json")
    assert result.code == 1, result.stderr
    check = next(c for c in result.json()["checks"] if c["check"] == "compress_verdict")
    assert not check["passed"] and check["failed_at_compress"] == ["latency_p90_ms"]
    overridden = cli("gate", path, "--max-latency-ms", "1s", "--override-verdict", "--json")
    assert overridden.code == 0, overridden.stderr
    check = next(c for c in overridden.json()["checks"] if c["check"] == "compress_verdict")
    assert check["passed"] and check["overridden"] is True


def test_a_failed_parity_fails_even_with_the_override(cli, real_manifest, tmp_path):
    bad = copy.deepcopy(real_manifest)
    bad["parity"]["passed"] = False
    result = cli("gate", write(tmp_path, bad), "--max-latency-ms", "1s", "--override-verdict")
    assert result.code == 1


def test_the_real_manifest_passes(cli, real_manifest, tmp_path):
    assert cli("gate", write(tmp_path, real_manifest), "--max-latency-ms", "10s").code == 0
