"""CI gate over a compress manifest: absolute budgets, regression against a stored baseline, and a
noise-robust ratio mode that re-measures the model interleaved with a reference in one run.

Why ratios: shared CI runners differ from run to run by 30-50 % (deploy.md §6.1), so an absolute
millisecond budget measured there flakes. Timing the model and a reference (e.g. the teacher)
alternately in the same job cancels the machine's speed; the ratio is what is gated.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


from squeeze.errors import UserInputError

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class GateConfig:
    max_latency_ms: float | None = None  # absolute budget on the manifest's measured latency
    percentile: int = 90  # which latency percentile the latency checks use
    max_accuracy_drop: float | None = None  # percentage points below the teacher
    max_size_mb: float | None = None  # ONNX file size
    baseline: Path | None = None  # a stored manifest to compare against
    max_regression: float | None = None  # fraction: 0.10 = 10 % slower than the baseline fails
    max_accuracy_regression: float | None = None  # percentage points below the baseline's accuracy
    reference: Path | None = None  # ONNX re-measured interleaved with the model (ratio mode)
    max_latency_ratio: float | None = None  # model / reference latency allowed in ratio mode
    ratio_ci: float = 0.03  # stop measuring when the 95 % CI half-width is within this fraction of the ratio
    time_cap_s: float = 60.0  # ... or when this much time was spent measuring
    block_iterations: int = 50  # timed runs per block; blocks alternate model / reference
    min_rounds: int = 6
    allow_predicted: bool = False  # gate on predicted (not measured) latency
    override_verdict: bool = False  # let this gate's checks replace a failed compress-time verdict (recorded)

    def __post_init__(self) -> None:
        if self.percentile not in PERCENTILES:
            raise UserInputError(f"--percentile must be one of {', '.join(map(str, PERCENTILES))}, got {self.percentile}")
        for name in ("max_latency_ms", "max_accuracy_drop", "max_size_mb", "max_regression", "max_accuracy_regression", "max_latency_ratio"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UserInputError(f"--{name.replace('_', '-')} must be a non-negative number, got {value}")
        if self.max_latency_ratio is not None and self.reference is None:
            raise UserInputError("--max-latency-ratio needs --reference (the model to time against)")
        if (self.max_regression is not None or self.max_accuracy_regression is not None) and self.baseline is None:
            raise UserInputError("--max-regression / --max-accuracy-regression need --baseline MANIFEST")
        if not 0 < self.ratio_ci < 1 or self.time_cap_s <= 0 or self.block_iterations < 5 or self.min_rounds < 3:
            raise UserInputError("ratio mode needs 0 < ratio-ci < 1, time cap > 0, >= 5 runs per block and >= 3 rounds")
        if not any(v is not None for v in (self.max_latency_ms, self.max_accuracy_drop, self.max_size_mb, self.baseline, self.reference)) \
                and not self.override_verdict:
            raise UserInputError("nothing to gate on: give at least one of --max-latency-ms, --max-accuracy-drop, --max-size-mb, "
                                 "--baseline, --reference")


def parse_fraction(text: str | float | None) -> float | None:
    """'10%' -> 0.10, '0.1' -> 0.1."""
    if text is None or isinstance(text, (int, float)):
        return text
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserInputError(f"expected a fraction like 10% or 0.1, got {text!r}") from None


def load_manifest(path: Path) -> dict[str, Any]:
    """A compress manifest, checked against its schema (squeeze/manifest_schema.py) before any field is used."""
    from squeeze.run.schema import validate_manifest

    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"manifest not found: {path}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read manifest {path}: {str(exc).splitlines()[0][:160]}") from None
    validate_manifest(manifest, path)
    manifest["_path"] = str(path)
    return manifest


def _latency_value(manifest: dict[str, Any], percentile: int, allow_predicted: bool, which: str = "latency") -> float:
    stats = manifest.get(which) or {}
    key = f"p{percentile}_ms"
    if key not in stats:
        raise UserInputError(f"{manifest['_path']} has no {which}.{key}")
    if not stats.get("measured", True) and not allow_predicted:
        raise UserInputError(f"{manifest['_path']}: the {which} is predicted, not measured; pass --allow-predicted to gate on it anyway")
    return float(stats[key])


def _check(name: str, value: float, limit: float, passed: bool, **extra: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), "value": value, "limit": limit, **extra}


def _accuracy_pct(manifest: dict[str, Any], key: str) -> float | None:
    acc = manifest.get("accuracy") or {}
    value = acc.get(key)
    return None if value is None else 100.0 * float(value)


def evaluate(manifest_path: Path, cfg: GateConfig, *, measure: Callable[..., dict[str, Any]] | None = None,
             progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Every requested check against the manifest; the verdict is 'pass' only if all hold."""
    manifest = load_manifest(manifest_path)
    pct = cfg.percentile
    checks: list[dict[str, Any]] = []
    measurements: dict[str, Any] = {}

    if cfg.max_latency_ms is not None:
        value = _latency_value(manifest, pct, cfg.allow_predicted)
        checks.append(_check(f"latency_p{pct}_ms", value, cfg.max_latency_ms, value <= cfg.max_latency_ms,
                             measured=manifest["latency"].get("measured", True)))
    if cfg.max_accuracy_drop is not None:
        teacher, output = _accuracy_pct(manifest, "teacher_accuracy"), _accuracy_pct(manifest, "output_accuracy")
        if teacher is None or output is None:
            raise UserInputError(f"{manifest['_path']} has no labelled accuracy; --max-accuracy-drop needs compress to have run with labelled --data")
        drop = teacher - output
        checks.append(_check("accuracy_drop_pct_points", drop, cfg.max_accuracy_drop, drop <= cfg.max_accuracy_drop))
    if cfg.max_size_mb is not None:
        size_mb = _model_bytes(manifest) / 1e6
        checks.append(_check("onnx_size_mb", size_mb, cfg.max_size_mb, size_mb <= cfg.max_size_mb))
    if cfg.baseline is not None:
        checks += _baseline_checks(manifest, load_manifest(cfg.baseline), cfg)
    if cfg.reference is not None:
        ratio = measure_ratio(manifest, cfg, measure=measure, progress=progress)
        measurements["ratio"] = ratio
        if cfg.max_latency_ratio is not None:
            checks.append(_check(f"latency_ratio_p{pct}", ratio["ratio"], cfg.max_latency_ratio, ratio["ratio"] <= cfg.max_latency_ratio,
                                 ci95=ratio["ci95"], rounds=ratio["rounds"], tight=ratio["tight"]))
    # The manifest's own verdict (parity, compress-time budgets) binds unless the user overrides it;
    # a failed parity is never shipped, override or not.
    parity = manifest.get("parity") or {}
    if "passed" in parity:
        checks.append(_check("onnx_parity", parity.get("max_abs_diff"), parity.get("tolerance_max_abs"), parity["passed"]))
    verdict = manifest["gate"]["verdict"]
    failed = [c["check"] for c in manifest["gate"].get("checks", []) if not c["passed"]]
    checks.append(_check("compress_verdict", verdict, "pass", verdict == "pass" or cfg.override_verdict,
                         failed_at_compress=failed, overridden=bool(cfg.override_verdict and verdict != "pass")))
    return {
        "manifest": manifest["_path"],
        "verdict": "pass" if all(c["passed"] for c in checks) else "fail",
        "checks": checks,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "target": (manifest.get("target") or {}).get("name"),
        **measurements,
    }


def _model_bytes(manifest: dict[str, Any]) -> int:
    outputs = manifest.get("outputs") or {}
    entry = outputs.get("model.onnx") or {}
    if "bytes" not in entry:
        raise UserInputError(f"{manifest['_path']} records no model.onnx size")
    return int(entry["bytes"])


def _baseline_checks(manifest: dict[str, Any], baseline: dict[str, Any], cfg: GateConfig) -> list[dict[str, Any]]:
    """Latency and accuracy against a stored manifest.

    When both manifests hold the teacher's latency measured in the same run, the comparison is of
    model/teacher ratios: that cancels a faster or slower runner between the two runs. Otherwise it
    is absolute, and only meaningful on the same machine; the check says which it used.
    """
    checks = []
    now_target, base_target = (manifest.get("target") or {}).get("name"), (baseline.get("target") or {}).get("name")
    if now_target != base_target:
        raise UserInputError(f"baseline was measured on target {base_target!r}, this manifest on {now_target!r}: not comparable")
    pct = cfg.percentile
    if cfg.max_regression is not None:
        now = _latency_value(manifest, pct, cfg.allow_predicted)
        base = _latency_value(baseline, pct, cfg.allow_predicted)
        mode = "absolute"
        if manifest.get("teacher_latency") and baseline.get("teacher_latency"):
            now /= _latency_value(manifest, pct, cfg.allow_predicted, "teacher_latency")
            base /= _latency_value(baseline, pct, cfg.allow_predicted, "teacher_latency")
            mode = "relative to the teacher measured in the same run"
        regression = now / base - 1.0
        checks.append(_check(f"latency_p{pct}_regression", regression, cfg.max_regression, regression <= cfg.max_regression,
                             mode=mode, baseline=baseline["_path"]))
    if cfg.max_accuracy_regression is not None:
        now_acc, base_acc = _accuracy_pct(manifest, "output_accuracy"), _accuracy_pct(baseline, "output_accuracy")
        if now_acc is None or base_acc is None:
            raise UserInputError("--max-accuracy-regression needs labelled accuracy in both manifests")
        drop = base_acc - now_acc
        checks.append(_check("accuracy_regression_pct_points", drop, cfg.max_accuracy_regression, drop <= cfg.max_accuracy_regression,
                             baseline=baseline["_path"]))
    return checks


def _model_onnx(manifest: dict[str, Any]) -> Path:
    from squeeze.io.fsutil import sha256_file

    path = Path(manifest["_path"]).parent / "model.onnx"
    if not path.is_file():
        raise UserInputError(f"ratio mode re-measures the model, but {path} is missing")
    recorded = ((manifest.get("outputs") or {}).get("model.onnx") or {}).get("sha256")
    if recorded and sha256_file(path) != recorded:
        raise UserInputError(f"{path} does not match the sha256 in its manifest: it changed after compress wrote it")
    return path


def measure_ratio(manifest: dict[str, Any], cfg: GateConfig, *, measure: Callable[..., dict[str, Any]] | None = None,
                  progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Time model and reference in alternating blocks (A B B A ...) until the ratio's CI is tight or time is up,
    with the one measurer every latency decision uses (squeeze/measure/latency.py)."""
    from squeeze.io.modelio import load_any
    from squeeze.measure.latency import MeasureConfig, compare
    from squeeze.targets import get_target

    target_name = (manifest.get("target") or {}).get("name") or "cpu"
    target = get_target(target_name)
    availability = target.available()
    if not availability.available:
        raise UserInputError(f"ratio mode measures on {target_name}, which is unavailable here: {availability.reason}")
    model = load_any(_model_onnx(manifest))
    reference = load_any(cfg.reference)
    if not hasattr(reference, "opset"):
        raise UserInputError(f"--reference must be an ONNX file, got {cfg.reference}")
    if list(reference.input_spec.shape[1:]) != list(model.input_spec.shape[1:]):
        raise UserInputError(f"reference takes {list(reference.input_spec.shape[1:])}, the model {list(model.input_spec.shape[1:])}: not comparable")
    batch = int((manifest.get("latency") or {}).get("batch_size", 1))
    # both at the thread count the model was gated at (its model.session.json), so the ratio is the deployed one
    threads = (((manifest.get("latency") or {}).get("settings") or {}).get("chosen") or {}).get("threads")
    settings = MeasureConfig(block_iterations=cfg.block_iterations, warmup=5, min_rounds=cfg.min_rounds, max_rounds=10_000,
                             ci=cfg.ratio_ci, time_cap_s=cfg.time_cap_s, statistic=f"p{cfg.percentile}", batch_size=batch,
                             threads=threads if isinstance(threads, int) and threads >= 1 else None)
    result = compare(target, {"model": model, "reference": reference}, settings, reference="reference", progress=progress,
                     profile=measure)
    ratio = result.ratios["model"]
    return {
        "ratio": ratio["ratio"],
        "ci95": ratio["ci95"],
        "tight": ratio["tight"],
        "rounds": result.rounds,
        "seconds": result.seconds,
        "percentile": cfg.percentile,
        "model_ms": result.per_round["model"],
        "reference_ms": result.per_round["reference"],
        "reference": str(cfg.reference),
        "target": target_name,
        "block_iterations": cfg.block_iterations,
        "load": result.load,
        "noisy": result.noisy,
        "why_noisy": result.why_noisy,
    }


def junit_xml(result: dict[str, Any]) -> str:
    """One <testcase> per check, a <failure> for each failed one: what CI systems render as test results."""
    failures = sum(not c["passed"] for c in result["checks"])
    suite = ET.Element("testsuite", name="squeeze.run.gate", tests=str(len(result["checks"])), failures=str(failures), errors="0")
    for c in result["checks"]:
        case = ET.SubElement(suite, "testcase", classname=f"squeeze.run.gate.{result.get('target') or 'target'}", name=c["check"])
        detail = f"value {c['value']} vs limit {c['limit']}"
        if not c["passed"]:
            ET.SubElement(case, "failure", message=f"{c['check']}: {detail}", type="GateFailure").text = json.dumps(c, default=str)
        else:
            ET.SubElement(case, "system-out").text = detail
    suites = ET.Element("testsuites", name="squeeze", tests=suite.get("tests"), failures=suite.get("failures"))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
