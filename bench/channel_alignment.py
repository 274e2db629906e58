"""Why the cpu target keeps widths to whole kernel blocks: conv stacks of 8..64 channels timed in float and INT8 on ORT.

    .venv/bin/python bench/channel_alignment.py [--threads 1] [--batch 32]

Four 3x3 conv + ReLU layers of C -> C channels at 14x14 and 7x7 (the sizes a 28x28 student's middle stages run at),
exported to ONNX and quantized by ONNX Runtime's own static quantizer (QDQ, u8 activations, s8 per-channel weights),
each timed alone at `--threads`, best of 5 blocks. A width that is not a whole kernel block (16 channels with AVX-512,
8 with AVX2: `host_channel_block`) pays for the padding: its GOP/s column drops. Nothing here asserts; it prints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from squeeze.targets.ort_runtime import host_channel_block  # noqa: E402

WIDTHS = (8, 16, 24, 32, 48, 64)
SIZES = (14, 7)
LAYERS = 4


def best_ms(path: Path, feed: np.ndarray, threads: int, iterations: int = 100) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(10):
        session.run(None, {"x": feed})
    blocks = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations // 5):
            session.run(None, {"x": feed})
        blocks.append((time.perf_counter() - start) / (iterations // 5))
    return min(blocks) * 1e3


def export_pair(width: int, size: int, batch: int, folder: Path) -> tuple[Path, Path, np.ndarray]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(width, width, 3, 1, 1), torch.nn.ReLU())
                                  for _ in range(LAYERS)]).eval()
    feed = torch.randn(batch, width, size, size)
    fp32, int8 = folder / f"c{width}_{size}.onnx", folder / f"c{width}_{size}_int8.onnx"
    torch.onnx.export(model, (feed,), str(fp32), input_names=["x"], dynamo=False, opset_version=17)

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": feed.numpy()}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), OneBatch(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return fp32, int8, feed.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import logging
    import warnings

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer warns about pre-processing on every call
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, chosen for a plain conv graph
    print(f"host channel block: {host_channel_block()} (the cpu target's channel_multiple); {args.threads} thread(s), batch {args.batch}")
    print(f"{'size':>5} {'C':>4} {'float ms':>9} {'GOP/s':>6} {'INT8 ms':>8} {'GOP/s':>6}  block")
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            for width in WIDTHS:
                fp32, int8, feed = export_pair(width, size, args.batch, Path(tmp))
                gops = 2 * LAYERS * width * width * 9 * size * size * args.batch / 1e9
                f, q = best_ms(fp32, feed, args.threads), best_ms(int8, feed, args.threads)
                whole = "whole" if width % host_channel_block() == 0 else "padded"
                print(f"{size:>5} {width:>4} {f:>9.3f} {gops / f * 1e3:>6.0f} {q:>8.3f} {gops / q * 1e3:>6.0f}  {whole}", flush=True)


if __name__ == "__main__":
    main()
