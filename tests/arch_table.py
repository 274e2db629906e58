"""README's architecture x pass table: what each pass does with each architecture of tests/arch_corpus.py.

    .venv/bin/python tests/arch_table.py              # print the table (Markdown), as recorded below
    .venv/bin/python tests/arch_table.py --measure    # run the passes (as the tests do) and print what they did
    .venv/bin/python tests/arch_table.py --measure --slow   # ... compress quick too (minutes per architecture)

EXPECTED is the record; tests/test_arch_corpus.py asserts every cell of it (a "refused: ..." cell's text must
appear in the pass's error message) and that README.md holds render()'s output."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arch_corpus import ARCHS  # noqa: E402

WORKS = "works"
_ALL = {"export + parity": WORKS, "INT8 QAD + parity": WORKS, "pruning": WORKS, "compress quick": WORKS}
# the transformers' residual width is hard-coded in their own reshapes: Torch-Pruning cuts the layers, the forward breaks
_VIT_PRUNING = ("refused: pruning broke the model at the forward of VisionTransformer itself … "
                "(`x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)`): Sizes of tensors must match")
_TIMM_PRUNING = ("refused: pruning broke the model at layer 'blocks.0.attn' (Attention) … (`qkv = self.qkv(x).reshape(b, n, 3, "
                 "self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)`): shape '[1, 97, 3, 4, 8]' is invalid")

EXPECTED: dict[str, dict[str, str]] = {name: dict(_ALL) for name in ARCHS}
EXPECTED["ViT (torchvision)"]["pruning"] = _VIT_PRUNING
EXPECTED["ViT (timm)"]["pruning"] = _TIMM_PRUNING


def _shape(name: str) -> str:
    arch = ARCHS[name]
    return f"{'x'.join(map(str, arch.input_shape))}, {arch.num_classes} classes"


def render(table: dict[str, dict[str, str]] | None = None) -> str:
    """The Markdown table: rows = architectures (input, classes), columns = passes."""
    from arch_passes import COLUMNS

    table = table or EXPECTED
    lines = ["| architecture | input | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for name, cells in table.items():
        row = [c.replace("|", "\\|") for c in (cells[col] for col in COLUMNS)]
        lines.append(f"| {name} | {_shape(name)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def measure(slow: bool) -> dict[str, dict[str, str]]:
    """Each cell from a real run of the pass, exactly as the tests run it."""
    import copy
    import tempfile

    from arch_passes import COLUMNS, artifact, corpus_data, outcome, prepare, run_compress, run_export, run_prune, run_quantize

    measured: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="squeeze-arch-table-") as tmp:
        root = Path(tmp)
        for i, (name, arch) in enumerate(ARCHS.items()):
            data, spec = corpus_data(arch.input_shape, root)
            model = prepare(arch, data)
            runs = [lambda: run_export(artifact(name, copy.deepcopy(model), data), data, root / f"{i}.onnx"),
                    lambda: run_quantize(artifact(name, copy.deepcopy(model), data), data, root / f"q{i}"),
                    lambda: run_prune(artifact(name, copy.deepcopy(model), data), data, root / f"p{i}.onnx")]
            if slow:
                runs.append(lambda: run_compress(artifact(name, copy.deepcopy(model), data), spec, root / f"c{i}"))
            cells = [outcome(run)[0] for run in runs]
            measured[name] = dict(zip(COLUMNS, cells + [EXPECTED[name][COLUMNS[3]] + " (not run)"] * (not slow)))
            print(f"{name}: {cells}", file=sys.stderr, flush=True)
    return measured


if __name__ == "__main__":
    print(render(measure("--slow" in sys.argv) if "--measure" in sys.argv else None))
