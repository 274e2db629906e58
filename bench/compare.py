"""squeeze vs the tools a user would otherwise pick, on the sample teachers, measured side by side in one run.

    nice -n 5 .venv/bin/python bench/compare.py --work-dir bench-compare/ > compare.log   # MNIST teachers, full settings
    nice -n 5 .venv/bin/python bench/compare.py --digits ...                             # + the digits teacher
    SQUEEZE_DATA=../shared/data nice -n 5 .venv/bin/python bench/compare.py --teachers airbench_cifar --budgets 4 8 ...  # CIFAR-10
    nice -n 10 .venv/bin/python bench/compare.py --quick --work-dir /tmp/cmp-quick        # tiny settings: checks the script

For every teacher, each method below produces one ONNX model, run on ONNX Runtime's CPU EP (the
`cpu` target):

  teacher          the float teacher, exported as `squeeze export` does: the reference row
  ort-ptq          ONNX Runtime static INT8 PTQ (`quantize_static`, QDQ) of the teacher's ONNX, calibrated
                   on the calibration split, configured as ORT's docs advise for this CPU (pre-process,
                   U8S8, per-channel weights, reduce_range without VNNI)
  nncf-ptq         NNCF 3.x PTQ through its ONNX backend (`nncf.quantize(onnx_model, ...)`): optional,
                   the row is skipped when nncf does not import (pip install nncf==3.4.0)
  modelopt-ptq     NVIDIA ModelOpt PTQ as its docs show it: `mtq.quantize(model, INT8_DEFAULT_CFG,
                   forward_loop)` on the torch teacher, then `torch.onnx.export` (legacy exporter, QDQ)
  tp-prune50       Torch-Pruning: MetaPruner + GroupMagnitudeImportance(p=2), ratio 0.5, then plain
                   cross-entropy fine-tuning (as many epochs as squeeze's prune pass trains)
  kd-small         a hand-picked small student (samples/students/resnet_small.json; resnet8_cifar.json on CIFAR-10) + plain KD
                   (`api.distill`, as many epochs as squeeze's distill pass trains)
  squeeze@1/k      `squeeze compress` with the recipe (default: the built-in full one) at a latency
                   budget of 1/k of the teacher's p50 measured here, for each k in --budgets

Every row is scored the same way: accuracy and top-1 agreement with the float teacher on the eval
split (ORT on the ONNX file), parameters and MACs from the ONNX graph (INT8 weights counted), ONNX
size, and latency. Latency is measured at the END, for all models of a dataset together, in
interleaved rounds (A B C ... then C B A ...) with the same threads, batch 1 (the table) and batch 32
(the roofline table); each figure is the median over rounds of the round's statistic, and the ratios
are against the teacher measured in those same rounds.

Each method's ONNX and wall time are stored under --work-dir, keyed by method + config + teacher +
data; a re-run reuses them and only measures again. squeeze compress also keeps its own pass cache
there (SQUEEZE_CACHE_DIR), so a killed run resumes inside a compress run too.

Writes into --work-dir: results.json (every figure), results.md (the tables, ready for
bench/RESULTS.md), and compare_<dataset>.png (accuracy vs latency; --plot-dir to put it elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BENCH_VERSION = 3  # 2: quantize runs a few-channel input conv in float; 3: cpu widths in 16-channel blocks (AVX-512). Bump when a method's code changes what it produces: cached ONNX files are then redone
TEACHERS = {"mnist": ("resnet_mnist", "mobilenetv2_mnist"), "digits": ("resnet_digits",), "cifar10": ("airbench_cifar", "resnet20_cifar")}
STUDENTS = ROOT / "samples" / "students"
# kd-small's hand-picked student per dataset: CIFAR gets the literature's ResNet-8 (the KD papers' smallest student)
SMALL_STUDENTS = {"cifar10": STUDENTS / "resnet8_cifar.json"}
# issue targets: >= 8x at <= 1 pt on MNIST (issue 16), >= 4x at <= 1 pt on CIFAR-10 (issue 18)
TARGET_SPEEDUP = {"cifar10": 4.0}


def small_student(dataset: str) -> Path:
    return SMALL_STUDENTS.get(dataset, STUDENTS / "resnet_small.json")
DEFAULT_RECIPE = "full"  # compress's default built-in recipe (squeeze.run.recipe.BUILTIN_RECIPES)
BASELINES = ("ort-ptq", "nncf-ptq", "modelopt-ptq", "tp-prune50", "kd-small")

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a method produces (part of its cache key) or how it is measured."""

    recipe: dict[str, Any]  # the effective squeeze recipe (as Recipe.to_dict())
    recipe_source: str
    budgets: tuple[float, ...]  # squeeze budgets: teacher p50 / k
    kd_epochs: int  # the hand-picked student's KD: as many epochs as the recipe's distill pass
    finetune_epochs: float  # Torch-Pruning's fine-tune: as many epochs as the recipe's prune pass trains in all
    finetune_lr: float = 0.01
    prune_ratio: float = 0.5
    threads: int = 1  # ORT intra-op threads of the table's latency (a second pass uses every usable core: the cpu target's default)
    rounds: int = 5
    iterations: int = 300
    batch32_iterations: int = 30
    quick: bool = False
    relative_budgets: bool = False  # squeeze's budgets as 1/k of the teacher timed in compress's own closing rounds


def recipe_budgets(recipe: dict[str, Any]) -> tuple[int, float]:
    """(distill epochs, prune pass training epochs in all) of a recipe: the baselines get the same budget."""
    steps = {name: cfg for step in recipe["passes"] for name, cfg in step.items()}
    kd_epochs = int(steps.get("distill", {}).get("epochs", 8))
    prune = steps.get("prune")
    finetune = float(prune["steps"] * prune["recover_epochs"] + prune["final_epochs"]) if prune else float(kd_epochs)
    return kd_epochs, finetune


QUICK_OVERRIDES = {
    "search": {"population": 6, "iterations": 6, "profile_iterations": 10},
    "distill": {"epochs": 1},
    "prune": {"steps": 1, "candidates": 1, "recover_epochs": 0.1, "final_epochs": 0.2, "profile_rounds": 2, "profile_iterations": 20,
              "final_rounds": 2, "final_iterations": 40},
    "quantize": {"epochs": 0, "latency_rounds": 2, "latency_iterations": 20},
    "profile": {"spec": {"iterations": 50}},
}


def make_settings(args: argparse.Namespace) -> Settings:
    from squeeze.run.compress import effective_recipe
    from squeeze.run.recipe import BUILTIN_RECIPES

    recipe_path = args.recipe or ("quick" if args.quick else DEFAULT_RECIPE)  # a built-in name or a YAML file
    overrides = {k: v for k, v in QUICK_OVERRIDES.items()} if args.quick else {}
    plan = effective_recipe(recipe_path, student=False, overrides=_present(recipe_path, overrides))
    recipe = plan.to_dict()
    kd_epochs, finetune = recipe_budgets(recipe)
    budgets = tuple(args.budgets) if args.budgets else ((8.0,) if args.quick else (4.0, 8.0, 12.0))
    source = f"built-in recipe {recipe_path!r}" if str(recipe_path) in BUILTIN_RECIPES else str(_rel(Path(recipe_path)))
    return Settings(recipe=recipe, recipe_source=source + (" + quick overrides" if args.quick else ""),
                    budgets=budgets, kd_epochs=kd_epochs, finetune_epochs=finetune, threads=args.threads,
                    rounds=2 if args.quick else args.rounds, iterations=50 if args.quick else args.iterations,
                    batch32_iterations=5 if args.quick else args.batch32_iterations, quick=args.quick,
                    relative_budgets=args.relative_budgets)


def _present(recipe_path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Only the overrides for passes the recipe has (apply_overrides refuses the others)."""
    from squeeze.run.compress import effective_recipe

    names = set(effective_recipe(recipe_path, student=False).names())
    return {k: v for k, v in overrides.items() if k in names}


def _rel(path: Path) -> Path:
    try:
        return Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return Path(path)


# ----------------------------------------------------------------------------------------------
# The method cache: <work>/<teacher>/<method>-<key>/{model.onnx, result.json}


def key_of(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"bench": BENCH_VERSION, **material}, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_method(work: Path, name: str, material: dict[str, Any], produce: Callable[[Path], dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """Run `produce(method_dir)` once per key; it writes method_dir/model.onnx and returns the method's record.

    The record (with its wall time) is written last, atomically: a run killed before that is redone
    (passes that resume, distill and compress, pick up where they stopped).
    """
    from squeeze.io.fsutil import write_json_atomic

    folder = work / f"{name}-{key_of(material)}"
    done = folder / "result.json"
    if done.exists() and (folder / "model.onnx").exists():
        record = json.loads(done.read_text())
        progress(f"{name}: produced earlier ({record['wall_s']:.0f}s then), reusing {folder}")
        return {**record, "cached": True, "onnx": str(folder / "model.onnx")}
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"{name}: running")
    started = time.perf_counter()
    record = produce(folder)
    record = {"method": name, "wall_s": round(time.perf_counter() - started, 1), "config": material, **record}  # a method may correct wall_s
    if not (folder / "model.onnx").exists():
        raise RuntimeError(f"{name} produced no model.onnx")
    write_json_atomic(done, json.loads(json.dumps(record, default=str)))
    progress(f"{name}: done in {record['wall_s']:.0f}s")
    return {**record, "cached": False, "onnx": str(folder / "model.onnx")}


# ----------------------------------------------------------------------------------------------
# Methods. Each takes what it needs and writes `folder/model.onnx`.


def export_teacher(teacher: Any, bundle: Any, folder: Path) -> dict[str, Any]:
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    onnx = export_onnx(teacher, folder / "model.onnx", ExportConfig(), bundle)
    return {"notes": f"float, {onnx.provenance[-1]['exporter']} export, opset {onnx.opset}", "parity": onnx.parity}


def _has_vnni() -> bool:
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def ort_ptq(teacher_onnx: Path, bundle: Any, folder: Path) -> dict[str, Any]:
    """ONNX Runtime's static PTQ the way its docs set it up for x86 CPUs."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = _input_name(teacher_onnx)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: x.numpy()} for x, _ in bundle.loader("calibration", batch_size=64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    reduce_range = not _has_vnni()  # ORT: 7-bit weights avoid u8s8 saturation on CPUs without VNNI
    pre = folder / "preprocessed.onnx"
    shapes = "symbolic"
    try:
        quant_pre_process(str(teacher_onnx), str(pre))
    except TypeError:  # ORT's symbolic shape inference trips on dynamo's opset-18 Reshape (CIFAR teacher): ONNX's own inference
        shapes = "ONNX (ORT's symbolic inference failed)"
        quant_pre_process(str(teacher_onnx), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(folder / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    pre.unlink()
    return {"notes": f"QDQ U8S8, per-channel, MinMax on {len(bundle.calibration)} calibration images, reduce_range={reduce_range}, {shapes} shape inference"}


def nncf_available() -> str | None:
    """nncf's version, or None when it does not import (it is optional)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import nncf
    except Exception:
        return None
    return nncf.__version__


def nncf_ptq(teacher_onnx: Path, bundle: Any, folder: Path) -> dict[str, Any]:
    """NNCF's PTQ on the ONNX model (its ONNX backend; deploy.md §5.3: its torch-side ONNX export
    emits OpenVINO custom ops ORT cannot load, so ONNX-in, ONNX-out is the route to ORT)."""
    import nncf
    import onnx

    name = _input_name(teacher_onnx)
    dataset = nncf.Dataset(list(bundle.loader("calibration", batch_size=1)), lambda item: {name: item[0].numpy()})
    quantized = nncf.quantize(onnx.load(str(teacher_onnx)), dataset, subset_size=len(bundle.calibration))
    onnx.save(quantized, str(folder / "model.onnx"))
    return {"notes": f"nncf {nncf.__version__} ONNX backend, default preset, {len(bundle.calibration)} calibration images"}


def modelopt_ptq(teacher: Any, bundle: Any, folder: Path) -> dict[str, Any]:
    """ModelOpt's documented PTQ: mtq.quantize with INT8_DEFAULT_CFG and a calibration loop, then torch.onnx.export.

    torch 2.13's default (dynamo) exporter cannot export fake-quant ops (deploy.md §4), so the export
    is the legacy one, which writes QuantizeLinear/DequantizeLinear."""
    from importlib.metadata import version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import modelopt.torch.quantization as mtq

        model = copy.deepcopy(teacher.module).eval()

        def forward_loop(m: torch.nn.Module) -> None:
            with torch.no_grad():
                for x, _ in bundle.loader("calibration", batch_size=64):
                    m(x)

        model = mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop)
        spec = teacher.input_spec
        with torch.no_grad():
            torch.onnx.export(model, (spec.example(),), str(folder / "model.onnx"), dynamo=False, opset_version=17,
                              input_names=[spec.name], output_names=["logits"],
                              dynamic_axes={spec.name: {0: "batch"}, "logits": {0: "batch"}})
    return {"notes": f"nvidia-modelopt {version('nvidia-modelopt')} INT8_DEFAULT_CFG (max calibration, {len(bundle.calibration)} images), "
                     "legacy torch.onnx.export opset 17"}


def tp_prune_finetune(teacher: Any, bundle: Any, folder: Path, s: Settings, seed: int, progress: Progress) -> dict[str, Any]:
    """The common pruning recipe: Torch-Pruning's MetaPruner + group magnitude, one shot at ratio 0.5, then CE fine-tuning.

    Fine-tuning: SGD (Nesterov, momentum 0.9, wd 5e-4) at the prune pass's LR (0.01), cosine,
    batch 128, the same 2-pixel shift augmentation squeeze's recipes train with; the best epoch is
    picked on the calibration split, as squeeze's passes do.
    """
    import torch_pruning as tp

    from squeeze.measure.analysis import count_macs, count_params
    from squeeze.io.artifacts import ModelArtifact
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    torch.manual_seed(seed)
    model = copy.deepcopy(teacher.module).eval()
    example = teacher.input_spec.example(batch=1)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    before = (count_params(model), count_macs(model, example))
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=s.prune_ratio,
                                  ignored_layers=classifier)
    pruner.step()
    after = (count_params(model), count_macs(model, example))
    progress(f"tp-prune50: params {before[0]} -> {after[0]}, MACs {before[1] / 1e6:.1f}M -> {after[1] / 1e6:.1f}M; fine-tuning {s.finetune_epochs:g} epochs")
    history = finetune_ce(model, bundle, s.finetune_epochs, s.finetune_lr, seed, progress)
    art = ModelArtifact(model.eval(), teacher.input_spec, "tp-prune50", "module", "", {})
    onnx = export_onnx(art, folder / "model.onnx", ExportConfig(), bundle)
    return {"notes": f"ratio {s.prune_ratio}, {s.finetune_epochs:g} epochs CE fine-tune, lr {s.finetune_lr}, best epoch {history['best_epoch']}",
            "params_torch": after[0], "macs_torch": after[1], "history": history, "parity": onnx.parity}


def finetune_ce(model: torch.nn.Module, bundle: Any, epochs: float, lr: float, seed: int, progress: Progress) -> dict[str, Any]:
    """Cross-entropy training for `epochs` (fractions allowed); the best state on the calibration split is kept."""
    from squeeze.io.augment import random_shift
    from squeeze.measure.accuracy import accuracy, torch_predictions

    batch = 128
    steps_per_epoch = max(1, len(bundle.train) // batch)
    total = max(1, round(epochs * steps_per_epoch))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    cal = bundle.loader("calibration", batch_size=512)

    def score() -> float:
        return accuracy(*torch_predictions(model, cal))

    best = {"score": score(), "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    history = [{"epoch": 0, "calibration_accuracy": best["score"]}]
    step, epoch = 0, 0
    aug = torch.Generator().manual_seed(seed + 1)
    while step < total:
        model.train()
        for x, y in bundle.loader("train", batch_size=batch, shuffle=True, seed=seed * 100_003 + epoch, drop_last=True):
            loss = torch.nn.functional.cross_entropy(model(random_shift(x, 2, aug)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= total:
                break
        epoch += 1
        cal_acc = score()
        history.append({"epoch": round(step / steps_per_epoch, 2), "calibration_accuracy": cal_acc})
        progress(f"fine-tune epoch {history[-1]['epoch']:g}/{epochs:g}: calibration accuracy {cal_acc * 100:.2f}%")
        if cal_acc > best["score"]:
            best = {"score": cal_acc, "epoch": history[-1]["epoch"], "state": copy.deepcopy(model.state_dict())}
    model.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "epochs": history}


def kd_small(teacher_path: Path, bundle: Any, folder: Path, s: Settings, augment: str, progress: Progress, student_file: Path) -> dict[str, Any]:
    """A hand-picked student distilled with plain KD (squeeze's distill pass: KD T=4, 0.9 KD + 0.1 CE)."""
    from squeeze import api
    from squeeze.io.modelio import load_model
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    result = api.distill(teacher_path, str(student_file), data=bundle.name, out=folder / "distill", epochs=s.kd_epochs, augment=augment,
                         progress=lambda m: progress(f"kd-small: {m}"))
    student = load_model(result["student_file"])
    onnx = export_onnx(student, folder / "model.onnx", ExportConfig(), bundle)
    spec = json.loads(student_file.read_text())
    return {"notes": f"{spec['arch'].split(':')[-1]}{spec['kwargs']}, {s.kd_epochs} epochs KD, augment {augment}, best epoch {result['best_epoch']}",
            "parity": onnx.parity}


def squeeze_compress(teacher_path: Path, bundle_name: str, folder: Path, budget: str, s: Settings, recipe_file: Path,
                     progress: Progress) -> dict[str, Any]:
    from squeeze import api

    out = folder / "compress-out"
    manifest = api.compress(teacher_path, target="cpu", out=out, data=bundle_name, latency_budget=budget,
                            recipe=recipe_file, progress=lambda m: progress(f"compress: {m}"))
    shutil.copy2(out / "model.onnx", folder / "model.onnx")
    stages = [{k: st.get(k) for k in ("stage", "accuracy", "params", "macs", "note")} | {"p50_ms": (st.get("latency") or {}).get("p50_ms")}
              for st in manifest["stages"]]
    student = manifest.get("student") or {}
    arch = (student.get("student") or {}).get("kwargs")
    shipped = next((st.get("note") for st in manifest["stages"] if st["stage"] == "quantize" and st.get("note")), None)
    # passes this compress took from its pass cache count with the seconds they took when they ran
    cached = sum(float(rec["seconds"]) for rec in manifest["passes"] if rec.get("cached"))
    precision = manifest.get("precision") or {}
    chosen = (manifest["latency"].get("settings") or {}).get("chosen")
    decided = f", closing rounds shipped {precision['shipped']} (INT8/float p90 {precision['ratio']:.3f})" if precision else ""
    return {"notes": f"budget {budget}, gate {manifest['gate']['verdict']} (p90 {manifest['latency']['p90_ms']:.3f} ms at {chosen}), "
                     f"student {arch}" + (f", quantize shipped {shipped}" if shipped else "") + decided,
            "precision": precision, "settings": chosen,
            "wall_s": round(manifest["seconds"] + cached, 1), "cached_pass_seconds": cached,
            "compress_seconds": manifest["seconds"], "gate": manifest["gate"], "stages": stages,
            "compress_speedup_p50": manifest.get("speedup_p50")}


def _profile_spec(s: Settings, cls: Any, batch: int = 1, threads: int | None = None) -> Any:
    return cls(batch_size=batch, warmup=20 if batch == 1 else 3, iterations=s.iterations if batch == 1 else s.batch32_iterations,
               threads=threads)


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in init)


# ----------------------------------------------------------------------------------------------
# One teacher: every method, then scoring (latency comes later, with the whole dataset)


def run_teacher(name: str, dataset: str, s: Settings, work: Path, progress: Progress, only: set[str] | None) -> list[dict[str, Any]]:
    """Produce (or reuse) every method's ONNX for one teacher; returns rows with everything but latency."""
    from squeeze import api
    from squeeze.io.modelio import load_model, load_onnx
    from squeeze.targets.base import ProfileSpec
    from squeeze.targets.cpu import CpuTarget

    teacher_path = ROOT / "samples" / "teachers" / f"{name}.pt"
    teacher = load_model(teacher_path)
    bundle = api.open_data(dataset, teacher)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    base = {"teacher": teacher.sha256, "data": bundle.fingerprint}
    say = lambda m: progress(f"[{name}] {m}")  # noqa: E731
    records: list[dict[str, Any]] = []

    def attempt(method: str, material: dict[str, Any], produce: Callable[[Path], dict[str, Any]]) -> None:
        if only is not None and method.split("@")[0] not in only and method != "teacher":
            return
        try:
            records.append(cached_method(folder, method, {**base, "method": method, **material}, produce, say))
        except Exception as exc:  # one failing method must not cost the others: the row says what failed
            say(f"{method} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            records.append({"method": method, "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})

    attempt("teacher", {}, lambda d: export_teacher(teacher, bundle, d))
    teacher_onnx = Path(records[0]["onnx"])
    attempt("ort-ptq", {"reduce_range": not _has_vnni()}, lambda d: ort_ptq(teacher_onnx, bundle, d))
    nncf_version = nncf_available()
    if nncf_version:
        attempt("nncf-ptq", {"nncf": nncf_version}, lambda d: nncf_ptq(teacher_onnx, bundle, d))
    else:
        say("nncf-ptq: skipped, nncf does not import (optional: pip install nncf==3.4.0)")
        records.append({"method": "nncf-ptq", "failed": "skipped: nncf not installed"})
    attempt("modelopt-ptq", {}, lambda d: modelopt_ptq(teacher, bundle, d))
    attempt("tp-prune50", {"ratio": s.prune_ratio, "epochs": s.finetune_epochs, "lr": s.finetune_lr, "seed": 0},
            lambda d: tp_prune_finetune(teacher, bundle, d, s, 0, say))
    augment = _distill_augment(s.recipe)
    student_file = small_student(dataset)
    attempt("kd-small", {"student": json.loads(student_file.read_text()), "epochs": s.kd_epochs, "augment": augment},
            lambda d: kd_small(teacher_path, bundle, d, s, augment, say, student_file))

    # squeeze's budgets: fractions of the teacher's p50, measured once here (every usable core, as
    # compress measures) and cached, so a re-run derives the same budgets and its compress runs hit their caches
    teacher_p50 = _teacher_reference_latency(folder, load_onnx(teacher_onnx), s, say, CpuTarget(), ProfileSpec)
    recipe_file = folder / f"recipe-{key_of(s.recipe)}.yaml"
    _write_recipe(s.recipe, recipe_file)
    for k in s.budgets:
        material = {"budget_ratio": round(1 / k, 6)} if s.relative_budgets else {"budget_ms": round(teacher_p50 / k, 6)}
        budget = f"{material['budget_ratio']}x" if s.relative_budgets else f"{material['budget_ms']:.6f}ms"
        attempt(f"squeeze@1/{k:g}", {"recipe": s.recipe, **material},
                lambda d, b=budget: squeeze_compress(teacher_path, dataset, d, b, s, recipe_file, say))
    _score(records, bundle, teacher_onnx, say)
    for r in records:
        r.update(teacher_name=name, dataset=dataset)
    return records


def _distill_augment(recipe: dict[str, Any]) -> str:
    steps = {n: c for step in recipe["passes"] for n, c in step.items()}
    return str(steps.get("distill", {}).get("augment", "auto"))  # distill's default: the dataset's own


def _write_recipe(recipe: dict[str, Any], path: Path) -> None:
    import yaml

    from squeeze.io.fsutil import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("# effective recipe of bench/compare.py\n" + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None))


def _teacher_reference_latency(folder: Path, teacher_onnx: Any, s: Settings, say: Progress, target: Any, spec_cls: Any) -> float:
    from squeeze.io.fsutil import write_json_atomic

    # measured as compress and its search/prune measure by default (every usable core), so a budget
    # of 1/k means 1/k of the teacher as squeeze itself sees it
    path = folder / f"teacher-latency-{key_of({'onnx': teacher_onnx.sha256, 'threads': None, 'quick': s.quick})}.json"
    if path.exists():
        p50 = json.loads(path.read_text())["p50_ms"]
        say(f"teacher reference p50 {p50:.3f} ms (measured earlier; sets squeeze's budgets)")
        return p50
    stats = [target.profile(teacher_onnx, _profile_spec(s, spec_cls)).p50_ms for _ in range(3)]
    p50 = float(np.median(stats))
    write_json_atomic(path, {"p50_ms": p50, "rounds": stats, "threads": "every usable core", "loadavg": os.getloadavg()})
    say(f"teacher reference p50 {p50:.3f} ms (median of 3 runs; sets squeeze's budgets)")
    return p50


def _score(rows: list[dict[str, Any]], bundle: Any, teacher_onnx: Path, say: Progress) -> None:
    """Accuracy and agreement on the eval split, in ORT, from the ONNX file; params/MACs from the graph."""
    from squeeze.measure.analysis import onnx_summary
    from squeeze.measure.accuracy import accuracy, onnx_predictions

    loader = bundle.loader("eval", batch_size=256)
    reference, labels = onnx_predictions(teacher_onnx, loader)
    for r in rows:
        if "failed" in r:
            continue
        path = Path(r["onnx"])
        preds, _ = onnx_predictions(path, loader)
        summary = onnx_summary(path)
        r.update(accuracy=accuracy(preds, labels), agreement=float((preds == reference).mean()), eval_samples=int(len(labels)),
                 params=summary["params"], macs=summary["macs"], onnx_bytes=path.stat().st_size,
                 int8=any(op in summary["ops"] for op in ("QuantizeLinear", "DequantizeLinear")))
        say(f"{r['method']}: eval accuracy {r['accuracy'] * 100:.2f}%, agreement {r['agreement'] * 100:.2f}%")


# ----------------------------------------------------------------------------------------------
# Latency: all models of a dataset in interleaved rounds, same threads (compress's StageMeter)


def measure_latency(rows: list[dict[str, Any]], s: Settings, batch: int, progress: Progress, threads: int | None, tag: str) -> None:
    """Fill row[tag] with this batch/threads' latency of every model, all in the same interleaved rounds (the one
    measurer compress uses). threads=None: each model at its fastest session settings (compress's tuning)."""
    from squeeze.io.modelio import load_onnx
    from squeeze.measure.latency import MeasureConfig, compare
    from squeeze.targets.cpu import CpuTarget

    live = [r for r in rows if "failed" not in r]
    spec = _profile_spec(s, dict, batch, threads)
    arts = {f"{r['teacher_name']}/{r['method']}": load_onnx(r["onnx"]) for r in live}
    cfg = MeasureConfig(block_iterations=spec["iterations"], warmup=spec["warmup"], min_rounds=s.rounds, max_rounds=s.rounds, batch_size=batch,
                        threads=threads, tune="off" if threads else "full", choose_by="p90", time_cap_s=1e9)
    before = os.getloadavg()
    result = compare(CpuTarget(), arts, cfg, progress=progress)
    after = os.getloadavg()
    for r, name in zip(live, arts):
        r[tag] = {k: result.stats[name].get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "threads", "iterations", "batch_size")}
        r[tag]["p50_ms_per_round"] = result.per_round[name]
        r[tag]["settings"] = (result.settings.get(name) or {}).get("chosen")
        r[tag]["loadavg_before_after"] = [before[0], after[0]]
        r[tag]["noisy"] = result.why_noisy if result.noisy else []


# ----------------------------------------------------------------------------------------------
# Roofline: this CPU's measured GEMM peak vs what each model achieves


def gemm_peak(threads: tuple[int, ...] = (1, 2), n: int = 1024, reps: int = 7) -> list[dict[str, Any]]:
    """Best-of-`reps` throughput of an n x n x n GEMM: float32 through numpy (OpenBLAS) and ORT's MatMul,
    u8 x s8 -> s32 through ORT's MatMulInteger, and u8 x s8 through ORT's QLinearConv as a 1x1 convolution
    (`conv_gemm_gops`): the kernel ORT runs INT8 convolutions with symmetric weights on. On a CPU with AMX the
    two u8s8 figures differ ~2.3x: MatMulInteger uses AMX tiles, QLinearConv's symmetric path does not."""
    from onnx import TensorProto, helper
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b8 = rng.integers(-64, 64, (n, n), dtype=np.int8)

    def session(op: str, in_type: int, b_init: np.ndarray, out_type: int, t: int) -> Any:
        return _single_op_session(helper.make_node(op, ["A", "B"], ["Y"]), [helper.make_tensor_value_info("A", in_type, [n, n])],
                                  [helper.make_tensor_value_info("Y", out_type, [n, n])], {"B": b_init}, t)

    flop = 2.0 * n ** 3
    out = []
    for t in threads:
        with threadpool_limits(limits=t, user_api="blas"):
            best_np = _best_seconds(lambda: np.matmul(a, b), reps)
        fp32 = session("MatMul", TensorProto.FLOAT, b, TensorProto.FLOAT, t)
        int8 = session("MatMulInteger", TensorProto.UINT8, b8, TensorProto.INT32, t)
        best_ort = _best_seconds(lambda: fp32.run(None, {"A": a}), reps)
        best_int8 = _best_seconds(lambda: int8.run(None, {"A": a8}), reps)
        out.append({"threads": t, "n": n, "numpy_gflops": flop / best_np / 1e9, "ort_matmul_gflops": flop / best_ort / 1e9,
                    "ort_int8_gops": flop / best_int8 / 1e9, "conv_gemm_gops": conv_gemm_peak(t, reps)})
    return out


def conv_gemm_peak(threads: int, reps: int = 7, channels: int = 512, side: int = 16, batch: int = 8) -> float:
    """GOP/s of ORT's QLinearConv (channels-last, the layout ORT's level-all graph runs INT8 convs in) as a 1x1
    convolution, a GEMM of M = batch * side^2 pixels, K = N = channels, with symmetric per-channel int8 weights."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    c = channels
    consts = {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8), "w": rng.integers(-64, 64, (c, c, 1, 1), dtype=np.int8),
              "ws": np.full(c, 0.01, np.float32), "wz": np.zeros(c, np.int8), "ys": np.array(0.05, np.float32), "yz": np.array(128, np.uint8)}
    shape = [batch, side, side, c]
    session = _single_op_session(helper.make_node("QLinearConv", ["x", *consts], ["y"], domain="com.microsoft", channels_last=1),
                                 [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)],
                                 [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)], consts, threads,
                                 opsets=(("", 17), ("com.microsoft", 1)))
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    return 2.0 * c * c * side * side * batch / _best_seconds(lambda: session.run(None, {"x": x}), reps) / 1e9


def _single_op_session(node: Any, inputs: list[Any], outputs: list[Any], initializers: dict[str, np.ndarray], threads: int,
                       opsets: tuple[tuple[str, int], ...] = (("", 17),)) -> Any:
    """An ORT CPU session of a one-node graph at `threads` intra-op threads."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = helper.make_graph([node], node.op_type, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _best_seconds(fn: Callable[[], Any], reps: int) -> float:
    """The fastest of `reps` timed calls, after one untimed warm-up call."""
    fn()
    return min(_timed(fn) for _ in range(reps))


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def achieved_gflops(macs: int, batch: int, p50_ms: float) -> float:
    return 2.0 * macs * batch / (p50_ms / 1e3) / 1e9


# ----------------------------------------------------------------------------------------------
# Tables, dominance, plot


def label(r: dict[str, Any]) -> str:
    return r["method"]


def is_squeeze(r: dict[str, Any]) -> bool:
    return r["method"].startswith("squeeze@")


LATENCY_TOLERANCE = 0.03  # latencies within 3% count as equal: one interleaved measurement's noise here is larger


def dominance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each baseline, the squeeze points that Pareto-dominate it on (accuracy, p50 at batch 1).

    Dominates = at least as accurate and at most as slow (within the tolerance), and strictly better
    in one: higher accuracy, or lower p50 beyond the tolerance. `faster_only` lists squeeze points
    that are faster but less accurate (the trade the baseline does not offer)."""
    squeeze_rows = [r for r in rows if is_squeeze(r) and "failed" not in r]
    out = []
    for b in rows:
        if is_squeeze(b) or "failed" in b or b["method"] == "teacher":
            continue
        acc, p50 = b["accuracy"], b["latency_b1"]["p50_ms"]
        winners, faster_only = [], []
        for q in squeeze_rows:
            q_acc, q_p50 = q["accuracy"], q["latency_b1"]["p50_ms"]
            if q_acc >= acc and q_p50 <= p50 * (1 + LATENCY_TOLERANCE) and (q_acc > acc or q_p50 < p50 * (1 - LATENCY_TOLERANCE)):
                winners.append(q["method"])
            elif q_p50 < p50 * (1 - LATENCY_TOLERANCE):
                faster_only.append(q["method"])
        out.append({"baseline": b["method"], "dominated_by": winners, "faster_but_less_accurate": faster_only})
    return out


def target_check(rows: list[dict[str, Any]], speedup: float = 8.0, max_drop_pt: float = 1.0) -> dict[str, Any]:
    teacher = next(r for r in rows if r["method"] == "teacher")
    found = []
    for r in rows:
        if not is_squeeze(r) or "failed" in r:
            continue
        x = teacher["latency_b1"]["p50_ms"] / r["latency_b1"]["p50_ms"]
        drop = (teacher["accuracy"] - r["accuracy"]) * 100
        found.append({"method": r["method"], "speedup": x, "drop_pt": drop, "met": x >= speedup and drop <= max_drop_pt})
    return {"speedup": speedup, "max_drop_pt": max_drop_pt, "points": found, "met": any(f["met"] for f in found)}


def format_table(rows: list[dict[str, Any]]) -> str:
    teacher = next(r for r in rows if r["method"] == "teacher" and "failed" not in r)
    t50, t90 = teacher["latency_b1"]["p50_ms"], teacher["latency_b1"]["p90_ms"]
    all_cores = "latency_b1_all_cores" in teacher
    head = (f"{'method':<15} {'acc %':>6} {'Δ pt':>6} {'agree %':>7} {'params':>8} {'MMACs':>7} {'ONNX KB':>8} {'p50 ms':>7} {'p90 ms':>7} "
            f"{'x p50':>6} {'x p90':>6}" + (f" {'p50 tun':>7} {'x p50':>6}" if all_cores else "")
            + f" {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "failed" in r:
            lines.append(f"{r['method']:<15} {r['failed']}")
            continue
        lat = r["latency_b1"]
        lines.append(f"{r['method']:<15} {r['accuracy'] * 100:>6.2f} {(r['accuracy'] - teacher['accuracy']) * 100:>+6.2f} "
                     f"{r['agreement'] * 100:>7.2f} {r['params']:>8} {r['macs'] / 1e6:>7.2f} {r['onnx_bytes'] / 1024:>8.1f} "
                     f"{lat['p50_ms']:>7.3f} {lat['p90_ms']:>7.3f} {t50 / lat['p50_ms']:>6.2f} {t90 / lat['p90_ms']:>6.2f} "
                     + (f"{r['latency_b1_all_cores']['p50_ms']:>7.3f} "
                        f"{teacher['latency_b1_all_cores']['p50_ms'] / r['latency_b1_all_cores']['p50_ms']:>6.2f} " if all_cores else "")
                     + f"{r['wall_s']:>7.0f}")
    return "\n".join(lines)


def format_notes(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {r['method']:<15} {r.get('notes', '')}" for r in rows if "failed" not in r)


def format_roofline(rows: list[dict[str, Any]], peaks: list[dict[str, Any]], threads: int) -> str:
    """Achieved GFLOP/s per model; %peak against the float32 GEMM peak, or for QDQ models the u8s8 peak of the
    kernel ORT runs their convolutions on (QLinearConv), with MatMulInteger's (AMX where present) beside it."""
    peak = next((p for p in peaks if p["threads"] == threads), peaks[-1])
    fp32_peak = max(peak["numpy_gflops"], peak["ort_matmul_gflops"])
    head = (f"{'model':<34} {'MMACs':>7} {'prec':>4} {'b1 p50 ms':>9} {'b1 GFLOP/s':>10} {'b1 %peak':>8} {'b32 p50 ms':>10} {'b32 GFLOP/s':>11} "
            f"{'b32 %peak':>9} {'b32 %MatMulInteger':>18}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "failed" in r or "latency_b32" not in r:
            continue
        ref = peak.get("conv_gemm_gops", peak["ort_int8_gops"]) if r["int8"] else fp32_peak
        g1 = achieved_gflops(r["macs"], 1, r["latency_b1"]["p50_ms"])
        g32 = achieved_gflops(r["macs"], 32, r["latency_b32"]["p50_ms"])
        lines.append(f"{r['teacher_name'] + '/' + r['method']:<34} {r['macs'] / 1e6:>7.2f} {'int8' if r['int8'] else 'fp32':>4} "
                     f"{r['latency_b1']['p50_ms']:>9.3f} {g1:>10.2f} {100 * g1 / ref:>7.1f}% {r['latency_b32']['p50_ms']:>10.3f} "
                     f"{g32:>11.2f} {100 * g32 / ref:>8.1f}% " + (f"{100 * g32 / peak['ort_int8_gops']:>17.1f}%" if r["int8"] else f"{'':>18}"))
    return "\n".join(lines)


def format_peaks(peaks: list[dict[str, Any]]) -> str:
    lines = [f"{'threads':>7} {'numpy fp32 GFLOP/s':>18} {'ORT MatMul fp32 GFLOP/s':>23} {'ORT MatMulInteger u8s8 GOP/s':>28}"
             f" {'ORT QLinearConv 1x1 u8s8 GOP/s':>30}   (n={peaks[0]['n']} GEMM; conv: 512 channels, 8x16x16 pixels; best of 7)"]
    for p in peaks:
        lines.append(f"{p['threads']:>7} {p['numpy_gflops']:>18.1f} {p['ort_matmul_gflops']:>23.1f} {p['ort_int8_gops']:>28.1f}"
                     f" {p.get('conv_gemm_gops', float('nan')):>30.1f}")
    return "\n".join(lines)


MARKERS = {"teacher": ("*", "black"), "ort-ptq": ("s", "tab:blue"), "nncf-ptq": ("D", "tab:cyan"), "modelopt-ptq": ("^", "tab:green"),
           "tp-prune50": ("v", "tab:orange"), "kd-small": ("P", "tab:purple")}


def pareto_plot(by_teacher: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Accuracy vs p50 (log), one panel per teacher. The y range shows the region near the teacher
    (down to 4 pt below it); a point below that is drawn on the bottom edge with its accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(by_teacher), figsize=(6.2 * len(by_teacher), 4.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], by_teacher.items()):
        live = [r for r in rows if "failed" not in r]
        teacher = next(r for r in live if r["method"] == "teacher")
        top = max(r["accuracy"] for r in live) * 100 + 0.4
        floor = max(min(r["accuracy"] for r in live) * 100, teacher["accuracy"] * 100 - 4.0) - 0.4

        def y(r: dict[str, Any]) -> float:
            return max(r["accuracy"] * 100, floor + 0.15)

        def clipped(r: dict[str, Any], color: str) -> None:
            if r["accuracy"] * 100 < floor:
                ax.annotate(f"↓{r['accuracy'] * 100:.1f}%", (r["latency_b1"]["p50_ms"], y(r)), textcoords="offset points", xytext=(5, 3),
                            fontsize=7, color=color)

        ax.axhline(teacher["accuracy"] * 100 - 1.0, color="grey", ls=":", lw=1, label="teacher − 1 pt")
        ax.axvline(teacher["latency_b1"]["p50_ms"] / 8, color="grey", ls="--", lw=1, label="teacher p50 / 8")
        sq = sorted((r for r in live if is_squeeze(r)), key=lambda r: r["latency_b1"]["p50_ms"])
        if sq:
            ax.plot([r["latency_b1"]["p50_ms"] for r in sq], [y(r) for r in sq], "o-", color="tab:red", label="squeeze compress")
            for r in sq:
                ax.annotate(r["method"].split("@")[1], (r["latency_b1"]["p50_ms"], y(r)), textcoords="offset points", xytext=(4, -11),
                            fontsize=8, color="tab:red")
                clipped(r, "tab:red")
        for r in live:
            if is_squeeze(r):
                continue
            marker, color = MARKERS.get(r["method"], ("o", "grey"))
            ax.plot(r["latency_b1"]["p50_ms"], y(r), marker, color=color, ms=10 if marker == "*" else 7, ls="none", label=r["method"])
            clipped(r, color)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))  # plain ms; log minor labels overlap
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(floor, top)
        ax.set_xlabel("latency p50, batch 1, ORT CPU (ms, log scale)")
        ax.set_ylabel("eval accuracy (%)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from squeeze.io.fsutil import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: nice -n 5 .venv/bin/python bench/compare.py --work-dir bench-compare/")
    parser.add_argument("--work-dir", default="bench-compare", help="method outputs, caches and results (reused by a re-run)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a few minutes): checks the script, not the numbers")
    parser.add_argument("--digits", action="store_true", help="also the digits teacher (resnet_digits)")
    parser.add_argument("--cifar", action="store_true", help="also the CIFAR-10 teacher (airbench_cifar; resnet20_cifar by --teachers; the full set from SQUEEZE_DATA)")
    parser.add_argument("--teachers", nargs="+", help="only these teachers (default: both MNIST ones, + digits with --digits; --quick: resnet_mnist)")
    parser.add_argument("--methods", nargs="+", help=f"only these methods (teacher always): {', '.join(BASELINES)}, squeeze")
    parser.add_argument("--recipe", help="squeeze's recipe (a built-in name or a YAML file; default full; quick + tiny overrides with --quick)")
    parser.add_argument("--relative-budgets", action="store_true", help="squeeze's budgets relative to the teacher (--latency-budget "
                        "0.125x: gated against the teacher timed in compress's own closing rounds) instead of ms from one reference")
    parser.add_argument("--budgets", nargs="+", type=float, help="squeeze budgets as divisors of the teacher's p50 (default 4 8 12)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of the table (default 1: steadiest on a shared "
                        "machine); a second batch-1 pass uses every usable core, the cpu target's default")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for training (default 1: on a busy 2-core machine "
                        "2 OpenMP threads ran slower)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--iterations", type=int, default=300, help="timed runs per model per round at batch 1")
    parser.add_argument("--batch32-iterations", type=int, default=30, help="timed runs per model per round at batch 32")
    parser.add_argument("--plot-dir", help="where the PNGs go (default: --work-dir)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.torch_threads)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SQUEEZE_CACHE_DIR", str(work / "squeeze-cache"))  # compress's pass cache + search's latency cache
    started = time.perf_counter()
    t0 = time.perf_counter()
    progress = lambda m: print(f"[{time.perf_counter() - t0:7.0f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    s = make_settings(args)
    only = set(args.methods) if args.methods else None
    datasets = {d: list(ts[:1] if d == "cifar10" else ts) for d, ts in TEACHERS.items()  # CIFAR: the >= 90 % teacher; resnet20 by name
                if d == "mnist" or (d == "digits" and args.digits) or (d == "cifar10" and args.cifar)}
    if args.quick and not args.teachers and not args.digits and not args.cifar:
        datasets = {"mnist": ["resnet_mnist"]}  # one teacher: the check stays a few minutes
    if args.teachers:
        datasets = {d: [t for t in ts if t in args.teachers] for d, ts in TEACHERS.items()}
        datasets = {d: ts for d, ts in datasets.items() if ts}
    command = "bench/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load_start = os.getloadavg()
    results: dict[str, Any] = {"command": command, "settings": dataclasses.asdict(s), "datasets": {}, "loadavg_start": load_start}

    all_rows: dict[str, list[dict[str, Any]]] = {}
    for dataset, teachers in datasets.items():
        rows = []
        for name in teachers:
            rows += run_teacher(name, dataset, s, work / dataset, progress, only)
        all_rows[dataset] = rows
    progress("roofline: GEMM peak of this CPU")
    peaks = gemm_peak()
    from squeeze.targets.ort_runtime import usable_cores

    cores = usable_cores()
    for dataset, rows in all_rows.items():
        progress(f"{dataset}: latency of {sum('failed' not in r for r in rows)} models, interleaved, batch 1, {s.threads} thread(s)")
        measure_latency(rows, s, 1, progress, s.threads, "latency_b1")
        progress(f"{dataset}: latency, interleaved, batch 1, each model at its tuned session settings (1..{cores} threads, ...)")
        measure_latency(rows, s, 1, progress, None, "latency_b1_all_cores")
        progress(f"{dataset}: latency, interleaved, batch 32, {s.threads} thread(s)")
        measure_latency(rows, s, 32, progress, s.threads, "latency_b32")
    progress("roofline: GEMM peak of this CPU, again (the larger of the two measurements is kept, per kernel)")
    peaks = [{k: max(a[k], b[k]) for k in a} for a, b in zip(peaks, gemm_peak())]
    load_end = os.getloadavg()

    from squeeze.api import versions

    plot_dir = Path(args.plot_dir) if args.plot_dir else work
    threads_used = s.threads
    md = [f"```\n{command}\n```", ""]
    summary = {}
    for dataset, rows in all_rows.items():
        by_teacher: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_teacher.setdefault(r["teacher_name"], []).append(r)
        png = plot_dir / f"compare_{dataset}.png"
        pareto_plot(by_teacher, png, f"{dataset}: eval accuracy vs ORT CPU latency ({threads_used} thread(s), all models interleaved in one run)")
        blocks = []
        for name, trows in by_teacher.items():
            verdicts = dominance(trows)
            target = target_check(trows, TARGET_SPEEDUP.get(dataset, 8.0))
            summary[name] = {"dominance": verdicts, "target": target}
            lines = [f"{dataset} / {name}: eval {trows[0].get('eval_samples', '?')} images; latency batch 1, {threads_used} ORT thread(s), "
                     f"median of {s.rounds} interleaved rounds x {s.iterations} runs; x = teacher / model (same rounds)"
                     + "; 'p50 tun': a second interleaved pass, each model at its tuned session settings (compress's: threads 1..cores, spinning, NCHWc layout on/off)",
                     format_table(trows), "", "how each row was made:", format_notes(trows), "", "squeeze vs each baseline "
                     "(Pareto: as accurate and as fast, better in one; latencies within 3% count as equal):"]
            for v in verdicts:
                state = ("dominated by " + ", ".join(v["dominated_by"])) if v["dominated_by"] else (
                    "NOT dominated" + (f" ({', '.join(v['faster_but_less_accurate'])} faster but less accurate)"
                                       if v["faster_but_less_accurate"] else ""))
                lines.append(f"  {v['baseline']:<15} {state}")
            pts = ", ".join(f"{p['method']} {p['speedup']:.1f}x / {p['drop_pt']:+.2f} pt drop" for p in target["points"])
            lines.append(f"target >= {target['speedup']:g}x lower p50 at <= {target['max_drop_pt']:g} pt drop: "
                         f"{'MET' if target['met'] else 'NOT MET'} ({pts})")
            blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
        print(text + "\n", flush=True)
        md += [f"```\n{text}\n```", "", f"![accuracy vs latency, {dataset}]({png.name})", ""]
        results["datasets"][dataset] = rows
    roof = (f"Roofline, cpu target: peak of this CPU ({load_end[0]:.1f} load) and each model's achieved GFLOP/s = 2·MACs·batch / p50\n"
            + format_peaks(peaks) + "\n\n" + "\n\n".join(format_roofline(rows, peaks, threads_used) for rows in all_rows.values())
            + f"\n(%peak at {threads_used} thread(s): fp32 rows against the larger fp32 GEMM figure, int8 (QDQ) rows against ORT's "
            "QLinearConv u8s8 GEMM, the kernel their convolutions run on; the last column against MatMulInteger's)")
    print(roof, flush=True)
    md += [f"```\n{roof}\n```", ""]
    env = versions()
    nncf_version = nncf_available()
    tail = (f"load average (1 min) at start {load_start[0]:.2f}, at the end {load_end[0]:.2f}; total {time.perf_counter() - started:.0f}s; "
            f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, nncf {nncf_version or 'not installed'}")
    print(tail, flush=True)
    md.append(tail)
    results.update(peaks=peaks, summary=summary, versions=env, nncf=nncf_version, loadavg_end=load_end,
                   seconds=round(time.perf_counter() - started, 1))
    from squeeze.io.fsutil import write_json_atomic

    write_json_atomic(work / "results.json", json.loads(json.dumps(results, default=str)))
    (work / "results.md").write_text("\n".join(md) + "\n")
    progress(f"wrote {work / 'results.json'}, {work / 'results.md'} and the plots in {plot_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
