"""Real architectures (tests/arch_corpus.py: torchvision/timm layouts at CIFAR size) through squeeze's passes.

Every (architecture, pass) cell of README's "Architectures" table (tests/arch_table.py) is asserted here:
"works" runs the pass to its end and checks what it produced; "refused: ..." asserts the pass stopped with a
squeeze error whose message holds the cell's text. Any other exception fails the test: a raw traceback is a
bug in squeeze, not a refusal. Inputs are real images (the bundled CIFAR-10 subset; resized for 32x48)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import onnx
import pytest
import torch

from arch_corpus import ARCHS
from arch_passes import COLUMNS, artifact, corpus_data, macs, outcome, prepare, run_compress, run_export, run_prune, run_quantize
from arch_table import EXPECTED, render

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(ARCHS)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Models this small gain nothing from intra-op threads, and spinning threads cost a shared CI runner dearly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """input shape -> (data bundle, --data spec), each built once."""
    root, built = tmp_path_factory.mktemp("arch-data"), {}

    def get(shape):
        if shape not in built:
            built[shape] = corpus_data(shape, root)
        return built[shape]
    return get


@pytest.fixture(scope="module", params=NAMES)
def trained(request, datasets):
    """One architecture, briefly trained on its real data (once per module: the tests group by architecture)."""
    arch = ARCHS[request.param]
    bundle, spec = datasets(arch.input_shape)
    return request.param, prepare(arch, bundle), bundle, spec


@pytest.fixture
def case(trained):
    """(name, artifact of a copy of the trained model, data bundle, --data spec): no pass sees another's edits."""
    name, model, bundle, spec = trained
    return name, artifact(name, copy.deepcopy(model), bundle), bundle, spec


def check_cell(name: str, column: str, got: str) -> bool:
    """Assert the outcome matches the table's cell; True when the pass is expected to work."""
    cell = EXPECTED[name][column]
    if cell == "works":
        assert got == "works", f"{name} / {column}: expected to work, got {got}"
        return True
    assert cell.startswith("refused: "), cell
    assert got.startswith("refused: "), f"{name} / {column}: expected {cell!r}, got {got!r}"
    at = 0
    for fragment in cell.removeprefix("refused: ").split(" … "):  # the cell quotes the message, " … " marking cuts
        found = got.find(fragment, at)
        assert found >= 0, f"{name} / {column}: {fragment!r} is not in the message (after what the cell quotes before it): {got!r}"
        at = found + len(fragment)
    return False


def test_the_corpus_covers_what_the_table_claims():
    assert len(ARCHS) >= 10 and set(EXPECTED) == set(ARCHS)
    assert all(set(cells) == set(COLUMNS) for cells in EXPECTED.values())
    assert any(a.input_shape[1] != a.input_shape[2] for a in ARCHS.values())  # a non-square input
    assert any(a.num_classes != 10 for a in ARCHS.values())
    for name, arch in ARCHS.items():
        out = arch.build()(torch.randn(2, *arch.input_shape))
        assert out.shape == (2, arch.num_classes), name


def test_export_with_parity(case, tmp_path):
    name, art, data, _ = case
    got, onnx_art = outcome(lambda: run_export(art, data, tmp_path / "model.onnx"))
    if check_cell(name, COLUMNS[0], got):
        parity = onnx_art.parity
        assert parity["passed"] and parity["samples"] == 256 and parity["inputs"].endswith(f"eval split of {data.name}")
        assert parity["batch1_max_abs_diff"] is not None and onnx_art.input_spec.dynamic_batch
    else:
        assert not (tmp_path / "model.onnx").exists()


def test_int8_qad_with_parity(case, tmp_path):
    from squeeze.passes.quantize.qdq import check_qdq_graph
    from squeeze.targets.cpu import CPU_QUANT_RULES

    name, art, data, _ = case
    got, result = outcome(lambda: run_quantize(art, data, tmp_path))
    if check_cell(name, COLUMNS[1], got):
        assert result["parity"]["passed"] and result["parity"]["samples"] == 512
        assert result["shipped"] == "int8" and result["graph"]["layers_with_int8_weights"] > 0
        assert check_qdq_graph(onnx.load(str(tmp_path / "stage" / "model.onnx")), CPU_QUANT_RULES) == []
        assert [h["epoch"] for h in result["history"]] == [0, 1]  # PTQ, then one QAT epoch


def test_dependency_graph_pruning(case, tmp_path):
    name, art, data, _ = case
    got, ran = outcome(lambda: run_prune(art, data, tmp_path / "pruned.onnx"))
    if check_cell(name, COLUMNS[2], got):
        pruned, result, onnx_art = ran
        assert result["steps"][1]["accepted"] and result["pruned"]["macs"] < result["input"]["macs"]
        assert macs(pruned, art.input_spec) < macs(art.module, art.input_spec)
        x, _ = data.batch("eval", 8)
        with torch.no_grad():
            assert pruned.eval()(x).shape == (8, ARCHS[name].num_classes)  # the classes are never pruned
        assert onnx_art.parity["passed"]


@pytest.mark.slow  # a few minutes per architecture: search, distill, prune, INT8 QAD and profiling on the real data
def test_compress_quick(case, tmp_path):
    name, art, _, spec = case
    got, result = outcome(lambda: run_compress(art, spec, tmp_path))
    if check_cell(name, COLUMNS[3], got):
        assert [s["stage"] for s in result["stages"]] == ["teacher", "search", "distill", "prune", "quantize", "final"]
        assert (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "out" / "manifest.json").exists()
    else:
        assert not (tmp_path / "out").exists()


def test_readme_holds_the_table():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Architectures\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Architectures' section"
    assert render() in section.group(1), "README's architecture table differs from tests/arch_table.py: paste its output"
