"""ONNX Runtime CPU vs OpenVINO CPU latency, one interleaved run: the MNIST ResNet teacher, a float student and
its INT8 versions.

    nice -n 10 .venv/bin/python bench/openvino_vs_ort.py [--rounds 9 --iterations 100 --threads 1] > bench.log

Models: samples/teachers/resnet_mnist.pt; the student samples/students/resnet_small.json (freshly initialised:
latency does not depend on the weights' values); INT8 = that student through the quantize pass's own code
(PTQ on 512 MNIST calibration images, no QAT epochs: QAT changes weights, not the graph), once per target
with the target's own backend: `cpu` -> torch-fx QDQ (ORT's fusable placement, 7-bit weights), `openvino`
-> nncf QDQ (OpenVINO's placement). So the INT8 row compares each runtime on its own INT8 model, the
float rows the very same ONNX file. Timing: every (runtime, model) pair is one block of `iterations` runs
(after a warm-up) per round, all pairs in every round, order turned every round and reversed every other
(squeeze.measure.latency.round_order, A B B A ...); the figure is the median over rounds of each block's
p50, the ratio the median of the per-round OpenVINO/ORT ratios (min-max over rounds beside it). Each runtime at the same pinned threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

import numpy as np  # noqa: E402

from squeeze.io.artifacts import ModelArtifact  # noqa: E402
from squeeze.io.data import load_data  # noqa: E402
from squeeze.io.modelio import load_model, load_onnx  # noqa: E402
from squeeze.io.onnx_export import ExportConfig, export_onnx  # noqa: E402
from squeeze.io.students import initial_student  # noqa: E402
from squeeze.measure.latency import LoadSampler, round_order  # noqa: E402
from squeeze.passes.quantize.pass_ import QuantizeConfig, quantize  # noqa: E402
from squeeze.targets import get_target  # noqa: E402
from squeeze.targets.base import ProfileSpec  # noqa: E402

RUNTIMES = {"ort": "cpu", "openvino": "openvino"}


def models(tmp: Path) -> dict[str, dict[str, object]]:
    """name -> {runtime: OnnxArtifact}: the same float file for both runtimes, each runtime's own INT8."""
    teacher = load_model(ROOT / "samples" / "teachers" / "resnet_mnist.pt")
    data = load_data("mnist")
    module, arch, _ = initial_student(str(ROOT / "samples" / "students" / "resnet_small.json"), teacher, seed=0)
    student = ModelArtifact(module.eval(), teacher.input_spec, arch, "checkpoint", "")
    out: dict[str, dict[str, object]] = {}
    for name, model in (("teacher (ResNet MNIST)", teacher), ("student float (resnet_small)", student)):
        path = tmp / f"{len(out)}.onnx"
        export_onnx(model, path, ExportConfig(), data)
        art = load_onnx(path)
        out[name] = {rt: art for rt in RUNTIMES}
    out["student INT8 (resnet_small)"] = {}
    for rt, target_name in RUNTIMES.items():
        stage = tmp / f"int8-{rt}"
        stage.mkdir()
        cfg = QuantizeConfig(epochs=0, calib_samples=512, parity_samples=512, speed_guard=False)
        result = quantize(student, student, data, get_target(target_name), cfg, stage, tmp / f"work-{rt}")
        print(f"# INT8 for {rt}: backend {result['backend']['version']}, parity max |diff| {result['parity']['max_abs_diff']:.3g}", flush=True)
        out["student INT8 (resnet_small)"][rt] = load_onnx(stage / "model.onnx")
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
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds must be >= 7")
    with tempfile.TemporaryDirectory(prefix="squeeze-ov-bench-") as tmp:
        arts = models(Path(tmp))
        per_round, load = measure(arts, args.rounds, args.iterations, args.threads)
    import onnxruntime
    import openvino

    print(f"# {args.rounds} interleaved rounds x {len(per_round)} blocks of {args.iterations} runs, batch 1, {args.threads} thread(s); "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}")
    print(f"# host: other processes used {load['others_busy_share'] * 100:.0f}% of the CPU, load average {load['load_average']:g}"
          + (" (oversubscribed: absolute figures inflated, ratios hold better)" if load["oversubscribed"] else ""))
    print(f"{'model':30s} {'ORT p50 ms':>11s} {'OpenVINO p50 ms':>16s} {'OV/ORT':>7s} {'ratio min-max':>14s}")
    for m in arts:
        ort_r, ov_r = np.asarray(per_round[(m, "ort")]), np.asarray(per_round[(m, "openvino")])
        ratios = ov_r / ort_r
        print(f"{m:30s} {np.median(ort_r):11.3f} {np.median(ov_r):16.3f} {np.median(ratios):7.2f} "
              f"{ratios.min():8.2f}-{ratios.max():.2f}")


if __name__ == "__main__":
    main()
