"""ONNX Runtime CPU vs OpenVINO CPU latency, one interleaved run, on squeeze's own outputs: the teacher, the float
student and the INT8 student of one `squeeze compress` output directory.

    squeeze compress samples/teachers/resnet_mnist.pt --target openvino --recipe quick --out out/ov-resnet
    nice -n 10 .venv/bin/python bench/openvino_vs_ort.py --compress-out out/ov-resnet [--rounds 9 --iterations 100 --threads 1]

Models, all from that directory: teacher.onnx; the float student = the checkpoint of the last float stage
(the manifest's precision record names it), exported once to the ONNX both runtimes run; INT8 = the shipped
model.onnx for the runtime the run targeted (cpu -> ORT, openvino -> OpenVINO), and for the other runtime
the same float student through the quantize pass's code with that target's backend (`cpu` -> torch-fx QDQ,
ORT's fusable placement, 7-bit weights where needed; `openvino` -> nncf QDQ, OpenVINO's placement), PTQ on
512 calibration images, no QAT epochs (QAT changes weights, not the graph). So the INT8 row compares each
runtime on its own INT8 model of one student, the float rows the very same ONNX file. Timing: every
(runtime, model) pair is one block of `iterations` runs (after a warm-up) per round, all pairs in every
round, order turned every round and reversed every other (squeeze.measure.latency.round_order, A B B A ...);
the figure is the median over rounds of each block's p50, the ratio the median of the per-round OpenVINO/ORT
ratios (min-max over rounds beside it). Each runtime at the same pinned threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

import numpy as np  # noqa: E402

from squeeze.io.data import load_data  # noqa: E402
from squeeze.io.modelio import load_model, load_onnx  # noqa: E402
from squeeze.io.onnx_export import ExportConfig, export_onnx  # noqa: E402
from squeeze.measure.latency import LoadSampler, round_order  # noqa: E402
from squeeze.passes.quantize.pass_ import QuantizeConfig, quantize  # noqa: E402
from squeeze.targets import get_target  # noqa: E402
from squeeze.targets.base import ProfileSpec  # noqa: E402

RUNTIMES = {"ort": "cpu", "openvino": "openvino"}


def float_checkpoint(run: Path, manifest: dict) -> tuple[str, Path]:
    """(stage, checkpoint) of the last float stage: the precision record's float input, else the last trained stage."""
    stages = [s["stage"] for s in manifest["stages"] if (run / s["stage"]).is_dir()]
    stage = (manifest.get("precision") or {}).get("float") or stages[-1]
    found = sorted((run / stage).glob("*.pt"))
    if not found:
        raise SystemExit(f"{run / stage}: no float checkpoint (.pt) to export")
    return stage, found[0]


def models(run: Path, tmp: Path) -> dict[str, dict[str, object]]:
    """name -> {runtime: OnnxArtifact}: the same teacher and float files for both runtimes, each runtime's own INT8."""
    manifest = json.loads((run / "manifest.json").read_text())
    data = load_data(manifest["data"]["name"])
    stage, ckpt = float_checkpoint(run, manifest)
    student = load_model(ckpt)
    path = tmp / "float.onnx"
    export_onnx(student, path, ExportConfig(), data)
    teacher, float_student = load_onnx(run / "teacher.onnx"), load_onnx(path)
    name = f"{sum(p.numel() for p in student.module.parameters()) / 1e3:.0f}k params, {stage}"
    out: dict[str, dict[str, object]] = {"teacher": {rt: teacher for rt in RUNTIMES}, f"student float ({name})": {rt: float_student for rt in RUNTIMES}}
    shipped = (manifest.get("precision") or {}).get("shipped") not in (None, stage)
    int8: dict[str, object] = {}
    for rt, target_name in RUNTIMES.items():
        if shipped and target_name == manifest["target"]["name"]:
            int8[rt] = load_onnx(run / "model.onnx")
            print(f"# INT8 for {rt}: the shipped {run / 'model.onnx'} ({manifest['precision']['shipped']} stage)", flush=True)
            continue
        work = tmp / f"int8-{rt}"
        work.mkdir()
        cfg = QuantizeConfig(epochs=0, calib_samples=512, parity_samples=512, speed_guard=False)
        result = quantize(student, student, data, get_target(target_name), cfg, work, tmp / f"work-{rt}")
        print(f"# INT8 for {rt}: PTQ of the float student, backend {result['backend']['version']}, "
              f"parity max |diff| {result['parity']['max_abs_diff']:.3g}", flush=True)
        int8[rt] = load_onnx(work / "model.onnx")
    out[f"student INT8 ({name})"] = int8
    return out


def measure(arts: dict[str, dict[str, object]], rounds: int, iterations: int, threads: int) -> tuple[dict, dict]:
    targets = {rt: get_target(name) for rt, name in RUNTIMES.items()}
    pairs = [(m, rt) for m in arts for rt in RUNTIMES]
    spec = ProfileSpec(warmup=10, iterations=iterations, threads=threads)
    per_round: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    sampler = LoadSampler()
    for r in range(rounds):
        for m, rt in round_order(pairs, r):
            per_round[(m, rt)].append(targets[rt].profile(arts[m][rt], spec).p50_ms)
    return per_round, sampler.finish().to_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compress-out", type=Path, required=True, help="a squeeze compress output directory")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds must be >= 7")
    with tempfile.TemporaryDirectory(prefix="squeeze-ov-bench-") as tmp:
        arts = models(args.compress_out, Path(tmp))
        per_round, load = measure(arts, args.rounds, args.iterations, args.threads)
    import onnxruntime
    import openvino

    print(f"# {args.rounds} interleaved rounds x {len(per_round)} blocks of {args.iterations} runs, batch 1, {args.threads} thread(s); "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}")
    print(f"# host: other processes used {load['others_busy_share'] * 100:.0f}% of the CPU, load average {load['load_average']:g}"
          + (" (oversubscribed: absolute figures inflated, ratios hold better)" if load["oversubscribed"] else ""))
    print(f"# from {args.compress_out} (target {json.loads((args.compress_out / 'manifest.json').read_text())['target']['name']})")
    print(f"{'model':40s} {'ORT p50 ms':>11s} {'OpenVINO p50 ms':>16s} {'OV/ORT':>7s} {'ratio min-max':>14s}")
    for m in arts:
        ort_r, ov_r = np.asarray(per_round[(m, "ort")]), np.asarray(per_round[(m, "openvino")])
        ratios = ov_r / ort_r
        print(f"{m:40s} {np.median(ort_r):11.3f} {np.median(ov_r):16.3f} {np.median(ratios):7.2f} "
              f"{ratios.min():8.2f}-{ratios.max():.2f}")


if __name__ == "__main__":
    main()
