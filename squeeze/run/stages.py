"""Stages: every model a run produces, measured the same way (accuracy and teacher agreement on the
eval split, params, MACs, size) and, at the end, timed together on the target in one interleaved
comparison (squeeze/measure/latency.py), so the stage table reads as what each pass did."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from squeeze.io.artifacts import ModelArtifact, OnnxArtifact
from squeeze.io.fsutil import copy_atomic, sha256_file, write_json_atomic
from squeeze.measure.latency import Comparison, MeasureConfig, compare
from squeeze.run.pipeline import CACHE_LAYOUT, CacheEntryInvalid, discard_entry, entry_lock, read_json_record, verified_file, versions_key
from squeeze.targets.base import ProfileSpec

Progress = Callable[[str], None]


def closing_config(spec: ProfileSpec, tune: str = "full") -> MeasureConfig:
    """compress's closing rounds: blocks of the profile's iterations, at least 5 rounds, more while a
    ratio to the teacher is still loose (up to a minute); every model at its fastest runtime settings
    (session tuning: threads, spinning, graph optimisation; a pinned --threads stays pinned)."""
    return MeasureConfig(block_iterations=spec.iterations, warmup=spec.warmup, min_rounds=5, max_rounds=15, ci=0.03, time_cap_s=60.0,
                         batch_size=spec.batch_size, threads=spec.threads, tune=tune, choose_by="p90")  # the gate bounds p90


class StageMeter:
    """Measures a model the same way at every stage; latency last, for all stages together."""

    def __init__(self, target: Any, spec: ProfileSpec, bundle: Any, teacher: ModelArtifact, progress: Progress):
        from squeeze.measure.accuracy import torch_predictions
        from squeeze.measure.fidelity import OutputReference

        self.target, self.spec, self.bundle, self.progress = target, spec, bundle, progress
        self.can_measure = target.available().available  # else every latency is a labelled prediction
        # accuracy and agreement need class logits; other outputs (dense maps, boxes) are compared to the teacher's outputs
        logits = teacher.output_kind(bundle) == "logits"
        self.loader = bundle.loader("eval", batch_size=256) if bundle is not None and logits else None
        self.reference = OutputReference(teacher.module, bundle.loader("eval", batch_size=256), bundle.targets) \
            if bundle is not None and not logits else None
        self.teacher = teacher
        self.teacher_preds, self.labels = torch_predictions(teacher.module, self.loader) if self.loader is not None else (None, None)
        self.predictions: dict[str, Any] = {}  # stage -> eval-split predictions, for the final comparison
        self.fidelity: dict[str, dict[str, Any]] = {}  # stage -> output fidelity to the teacher (maps and values)
        self.onnx_files: dict[str, OnnxArtifact] = {}  # stage -> the ONNX its latency is measured on
        self.comparison: Comparison | None = None

    def _scores(self, stage: str, preds: Any, labels: Any) -> dict[str, Any]:
        from squeeze.measure.accuracy import accuracy

        self.predictions[stage] = preds
        return {"accuracy": accuracy(preds, labels),
                "teacher_agreement": float((preds == self.teacher_preds).mean()) if self.teacher_preds is not None else None,
                "eval_samples": int(len(labels))}

    def _fidelity(self, stage: str, ev: dict[str, Any]) -> dict[str, Any]:
        """A map's pixel accuracy and agreement fill the accuracy and agreement columns; every figure is kept by name."""
        self.fidelity[stage] = ev
        return {"accuracy": ev.get("pixel_accuracy"), "teacher_agreement": ev.get("pixel_agreement"), "eval_samples": ev["samples"],
                **{k: v for k, v in ev.items() if k not in ("samples", "runtime")}}

    def model(self, name: str, art: ModelArtifact, onnx_path: Path) -> dict[str, Any]:
        """A torch-model stage: eval in torch; exported (with parity) to `onnx_path` for the latency rounds."""
        from squeeze.measure.accuracy import torch_predictions
        from squeeze.measure.analysis import count_macs, count_params
        from squeeze.io.onnx_export import ExportConfig, export_onnx

        self.progress(f"measuring stage '{name}': accuracy and size; exporting it for the latency rounds")
        row: dict[str, Any] = {"stage": name, "params": count_params(art.module), "macs": count_macs(art.module, art.input_spec.example())}
        if self.loader is not None:
            preds = (self.teacher_preds, self.labels) if art is self.teacher else torch_predictions(art.module, self.loader)
            row.update(self._scores(name, *preds))
        if self.reference is not None:
            row.update(self._fidelity(name, self.reference.teacher_scores if art is self.teacher else self.reference.torch(art.module)))
        onnx = export_onnx(art, onnx_path, ExportConfig(), self.bundle)
        self.onnx_files[name] = onnx
        row.update({"onnx_bytes": onnx_path.stat().st_size, "parity": onnx.parity})
        if Path(art.source).is_file():
            row["checkpoint_bytes"] = Path(art.source).stat().st_size
        return row

    def onnx(self, name: str, art: OnnxArtifact) -> dict[str, Any]:
        from squeeze.measure.accuracy import onnx_predictions
        from squeeze.measure.analysis import onnx_summary

        summary = onnx_summary(art.path)
        row: dict[str, Any] = {"stage": name, "params": summary["params"], "macs": summary["macs"], "onnx_bytes": art.path.stat().st_size,
                               "parity": art.parity}
        if self.loader is not None:
            row.update(self._scores(name, *onnx_predictions(art.path, self.loader)))
        if self.reference is not None:
            row.update(self._fidelity(name, self.reference.onnx(art.path)))
        self.onnx_files[name] = art
        return row

    def add_onnx(self, name: str, art: OnnxArtifact) -> None:
        """A stage whose figures came from the cache: only its latency is measured again, with the others."""
        self.onnx_files[name] = art

    def measure_latencies(self, rows: list[dict[str, Any]]) -> Comparison:
        """Fill row['latency'] (and the speed-up over the teacher, with its interval) for every stage from
        one interleaved comparison on the target (or one labelled prediction each)."""
        by_hash: dict[str, OnnxArtifact] = {}
        for row in rows:
            art = self.onnx_files[row["stage"]]
            by_hash.setdefault(art.sha256, art)
        teacher_hash = self.onnx_files["teacher"].sha256
        result = compare(self.target, by_hash, closing_config(self.spec), reference=teacher_hash, progress=self.progress)
        names = {}
        for row in rows:  # the noise verdict names stages, not the sha256 keys the rounds were timed under
            names.setdefault(self.onnx_files[row["stage"]].sha256, row["stage"])
        result.why_noisy = [next((why.replace(h, f"stage '{n}'") for h, n in names.items() if h in why), why) for why in result.why_noisy]
        for row in rows:
            h = self.onnx_files[row["stage"]].sha256
            row["latency"] = {**result.stats[h], "measured": result.kind == "measured",
                              "interleaved_with": [r["stage"] for r in rows]}
            if h in result.settings:
                row["latency"]["settings"] = result.settings[h]
            if h != teacher_hash and h in result.ratios:
                row.update(result.speedup(h))
        self.comparison = result
        return result


def _entry_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def teacher_stage(meter: StageMeter, teacher: ModelArtifact, bundle: Any, target: Any, spec: ProfileSpec, cache: Any,
                  stage: Path, needs_budget: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The teacher's stage row and teacher.onnx, plus (`needs_budget`) one latency measurement taken up front.

    That measurement (the teacher's latency in the manifest comes from the interleaved rounds at
    the end) only sets a derived budget, so a run with the user's budget, or with no pass aiming at one,
    skips it. It is cached like a pass: a re-run must see the same
    figure, or every later pass key would change with the noise of a new measurement (unless the cached
    one was taken on a noisy host: then it is measured again, _requiet). The cached
    teacher.onnx is reused only while it has the sha256 recorded with it."""
    material = {"layout": CACHE_LAYOUT, "teacher": teacher.sha256, "data": bundle.fingerprint if bundle else None, "target": target.name,
                "spec": asdict(spec), "versions": versions_key(),
                **({"output": teacher.metadata["output"]} if teacher.metadata.get("output") is not None else {})}
    entry = cache.entry("teacher", _entry_key(material))
    row_file, onnx_file = entry / "stage.json", entry / "teacher.onnx"
    with entry_lock(entry, meter.progress):
        if cache.resume and row_file.exists():
            try:
                saved = read_json_record(row_file, ("row", "budget_latency", "onnx_sha256"))
                verified_file(entry, onnx_file.name, saved["onnx_sha256"])
                meter.progress("teacher: measured earlier, reusing " + str(entry))
                copy_atomic(onnx_file, stage / "teacher.onnx")
                meter.add_onnx("teacher", load_onnx_like(stage / "teacher.onnx", saved["row"]))
                if not needs_budget:
                    return saved["row"], saved["budget_latency"]
                if saved["budget_latency"] is None:  # stored by a run that had no use for it
                    saved["budget_latency"] = budget_measurement(target, meter.onnx_files["teacher"], spec, meter.progress)
                    write_json_atomic(row_file, json.loads(json.dumps(saved, default=str)))
                    return saved["row"], saved["budget_latency"]
                return saved["row"], _requiet(saved, target, meter.onnx_files["teacher"], spec, meter.progress, row_file)
            except CacheEntryInvalid as exc:
                discard_entry(entry, exc, meter.progress)
        meter.progress(f"exporting and measuring the teacher on {target.name}")
        row = json.loads(json.dumps(meter.model("teacher", teacher, stage / "teacher.onnx"), default=str))
        teacher_onnx = meter.onnx_files["teacher"]
        budget_latency = budget_measurement(target, teacher_onnx, spec, meter.progress) if needs_budget else None
        entry.mkdir(parents=True, exist_ok=True)
        copy_atomic(stage / "teacher.onnx", onnx_file)
        record = {"row": row, "budget_latency": budget_latency, "onnx_sha256": sha256_file(onnx_file)}
        write_json_atomic(row_file, json.loads(json.dumps(record, default=str)))
    return row, budget_latency


def _requiet(saved: dict[str, Any], target: Any, teacher_onnx: OnnxArtifact, spec: ProfileSpec, progress: Progress,
             row_file: Path) -> dict[str, Any]:
    """A cached budget measurement taken on a noisy host is not kept for good: it is measured again, and the new
    figure replaces it when it is quiet or faster (the later passes then aim at the better figure, under new keys)."""
    cached = saved["budget_latency"]
    if not cached.get("noisy") or not cached.get("measured", True):
        return cached
    progress("teacher: its cached latency was measured on a noisy host; measuring it again")
    fresh = budget_measurement(target, teacher_onnx, spec, progress)
    if fresh["noisy"] and fresh["p50_ms"] >= cached["p50_ms"]:
        return cached
    write_json_atomic(row_file, json.loads(json.dumps({**saved, "budget_latency": fresh}, default=str)))
    return fresh


def budget_measurement(target: Any, teacher_onnx: OnnxArtifact, spec: ProfileSpec, progress: Progress, tries: int = 3) -> dict[str, Any]:
    """The teacher's latency a derived budget comes from. On a noisy host it is measured again (up to `tries`
    times) and the lowest p50 kept: contention only ever adds time, so the fastest attempt is the closest to the
    quiet figure, and a budget derived from it is never inflated by a neighbour's load."""
    attempts = []
    for i in range(tries):
        result = compare(target, {"teacher": teacher_onnx}, closing_config(spec), progress=progress)
        attempts.append(result)
        if not result.noisy or i + 1 == tries:
            break
        progress(f"the teacher's latency was measured on a noisy host ({'; '.join(result.why_noisy)}); measuring again ({i + 2}/{tries})")
    best = min(attempts, key=lambda r: r.stats["teacher"]["p50_ms"])
    return {**best.stats["teacher"], "measured": best.kind == "measured", "noisy": best.noisy, "why_noisy": best.why_noisy,
            "load": best.load, "settings": best.settings.get("teacher"), "attempts": [
                {"p50_ms": a.stats["teacher"]["p50_ms"], "noisy": a.noisy, "load": a.load} for a in attempts]}


def load_onnx_like(path: Path, row: dict[str, Any]) -> OnnxArtifact:
    from squeeze.io.modelio import load_onnx

    art = load_onnx(path)
    art.parity = row.get("parity")
    return art


def stage_row(name: str, record: dict[str, Any], art: Any, meter: StageMeter, pass_result: dict[str, Any] | None) -> dict[str, Any]:
    """A pass's stage figures (all but latency), stored beside its cache entry with the ONNX they were taken on,
    so that a resumed run does not evaluate them again; latency is measured afresh with the other stages.
    A stored row is reused only when its ONNX still has the recorded sha256."""
    entry = Path(record["cache_entry"])
    stored, stage_onnx = entry / "stage.json", entry / "stage.onnx"
    if stored.exists():
        try:
            saved = read_json_record(stored, ("row", "onnx_sha256"))
            if isinstance(art, OnnxArtifact):
                if saved["onnx_sha256"] != art.sha256:
                    raise CacheEntryInvalid("its stage figures belong to another ONNX")
                meter.add_onnx(name, art)
            else:
                verified_file(entry, stage_onnx.name, saved["onnx_sha256"])
                meter.add_onnx(name, load_onnx_like(stage_onnx, saved["row"]))
            return saved["row"]
        except CacheEntryInvalid as exc:
            meter.progress(f"{name}: stored stage figures in {entry} are damaged ({exc}); measuring the stage again")
            stored.unlink(missing_ok=True)
    if isinstance(art, OnnxArtifact):
        row = meter.onnx(name, art)
        shipped = (pass_result or {}).get("shipped")
        if shipped and shipped != "int8":
            row["note"] = shipped
        onnx_sha = art.sha256
    else:
        row = meter.model(name, art, stage_onnx)
        onnx_sha = sha256_file(stage_onnx)
    row = json.loads(json.dumps(row, default=str))
    write_json_atomic(stored, {"row": row, "onnx_sha256": onnx_sha})
    return row


def copy_checkpoints(records: list[dict[str, Any]], artifacts: dict[str, Any], stage_passes: set[str], stage: Path) -> None:
    """Each model-producing pass's checkpoint goes into the output as <pass>/<file>, for reuse and inspection."""
    for record in records:
        art = artifacts.get(record["name"])
        if record["name"] not in stage_passes or not isinstance(art, ModelArtifact) or not Path(art.source).is_file():
            continue
        dest = stage / record["name"] / Path(art.source).name
        dest.parent.mkdir(exist_ok=True)
        copy_atomic(Path(art.source), dest)
