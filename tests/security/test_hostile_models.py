"""Model files that try to run code when squeeze reads them: every one is refused with exit 2 and
one line, before torch deserializes anything, and the sentinel file never appears."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_refused
from hostile import hostile_pickles, hostile_pt2s
from squeeze import zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import load_model, save_exported_program
from squeeze.io.pt2_check import check_expression, check_guard, check_target

PT2_CASES = {  # case -> fragment of the refusal
    "expr_str": "is not a symbolic-shape expression",
    "guards_code": "is not a plain shape guard",
    "node_target": "names an operator outside ATen/prims",
    "range_constraints": "is not a symbolic-shape expression",
    "treespec": "names container type",
    "source_fn_stack": "source_fn_stack",
    "aotinductor": "AOTInductor binaries",
    "zip_traversal": "points outside the archive",
    "unknown_member": "unexpected member",
    "pickled_sample_inputs": "--trust-pickle",
    "legacy_layout": "not the layout torch.export.save writes",
}


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clean") / "tiny.pt2"
    save_exported_program(zoo.tiny_cnn().eval(), path, InputSpec((1, 1, 28, 28)))
    return path


@pytest.mark.parametrize("case", sorted(PT2_CASES))
def test_hostile_pt2_is_refused_before_torch_reads_it(cli, clean_pt2, tmp_path, sentinel, case):
    path = hostile_pt2s(clean_pt2, tmp_path, sentinel)[case]
    assert_refused(cli("inspect", path), PT2_CASES[case], sentinel=sentinel)
    if case in ("expr_str", "aotinductor"):  # every command loads through the same check; compress as a user would run it
        out = tmp_path / "out"
        assert_refused(cli("compress", path, "--recipe", "export", "--out", out, "--iterations", "5"), PT2_CASES[case],
                       sentinel=sentinel, out=out)


def test_the_expression_hole_is_real_without_the_check(clean_pt2, tmp_path, sentinel, monkeypatch):
    """The same file does run code when torch loads it unchecked: the test above guards a real hole."""
    import squeeze.io.pt2_check as pt2_check

    path = hostile_pt2s(clean_pt2, tmp_path, sentinel)["expr_str"]
    monkeypatch.setattr(pt2_check, "check_pt2", lambda p: None)
    load_model(path)
    assert sentinel.exists()


def test_a_clean_pt2_loads_and_runs(clean_pt2):
    art = load_model(clean_pt2)
    assert art.output_classes == 10 and art.input_spec.dynamic_batch


def test_torch_written_programs_pass_the_grammar(tmp_path):
    """Guards, symbolic expressions and operators that torch itself writes for a dynamic reshape,
    attention, LayerNorm, GELU, SiLU, hardswish and concatenation are all accepted."""
    from squeeze.io.pt2_check import check_pt2

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 4, 4)
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.norm = torch.nn.LayerNorm(16)

        def forward(self, x):
            t = self.norm(self.conv(x).flatten(2).transpose(1, 2))
            y, _ = self.attn(t, t, t)
            y = torch.cat([torch.nn.functional.gelu(y), torch.nn.functional.silu(y), torch.nn.functional.hardswish(y)], -1)
            return y.reshape(x.shape[0] // 2, -1)

    batch = torch.export.Dim("b", min=2, max=64)
    program = torch.export.export(Mixed().eval(), (torch.randn(4, 3, 16, 16),), dynamic_shapes={"x": {0: 2 * batch}})
    path = tmp_path / "mixed.pt2"
    torch.export.save(program, str(path))
    check_pt2(path)
    assert load_model(path, input_shape="4x3x16x16").output_shape == (1536,)  # and it really loads and runs


@pytest.mark.parametrize("text,ok", [
    ("Symbol('s77', positive=True, integer=True)", True),
    ("Mul(Integer(2), Symbol('s0', positive=True, integer=True))", True),
    ("FloorDiv(Symbol('s0', integer=True), Integer(2))", True),
    ("2*s65 + 1", True),
    ("Symbol('__import__')", True),  # a symbol's name is data, never looked up
    ("__import__('os').system('x')", False),
    ("Symbol('s0').__class__", False),
    ("Symbol('a; b')", False),
    ("(lambda: 0)()", False),
    ("[x for x in ()]", False),
    ("Integer(getattr)", False),  # builtins and sympy's own names resolve to objects, not symbols
    ("Tuple(exec, Integer(1))", False),
    ("Pow(Integer(9), Pow(Integer(9), Integer(9)))", False),  # a power tower: hangs sympy
    ("9**9**9", False),
    ("Pow(Symbol('s0', integer=True), Integer(2))", True),
    ("eval('1')", False),
])
def test_expression_grammar(text, ok):
    assert check_expression(text) is ok


@pytest.mark.parametrize("text,ok", [
    ("(L['x'].size()[0] % 2) == 0", True),
    ("(24*L['x'].size()[0]) == ((L['x'].size()[0] // 2)*3)", True),
    ("L['x'].stride()[1] >= 1", True),
    ("L['x'].__class__ == 0", False),
    ("L['x'].size()[0] == __import__('os').getpid()", False),
    ("L['x'].numpy() == 0", False),
])
def test_guard_grammar(text, ok):
    assert check_guard(text) is ok


@pytest.mark.parametrize("text,ok", [
    ("torch.ops.aten.conv2d.default", True), ("_operator.getitem", True), ("torch.sym_max", True),
    ("torch.os.system", False), ("torch.load", False), ("builtins.exec", False), ("#custom.op", False),
    ("torch.ops.aten.conv2d", False), ("torch.ops.mylib.op.default", False),
])
def test_target_allow_list(text, ok):
    assert check_target(text) is ok


@pytest.mark.parametrize("case", ["plain_pickle", "torch_save_zip", "torch_save_legacy"])
def test_pickles_in_every_container_are_refused(cli, tmp_path, sentinel, case):
    path = hostile_pickles(tmp_path, sentinel, zoo.tiny_cnn().state_dict())[case]
    out = tmp_path / "m.onnx"
    assert_refused(cli("export", path, "--out", out, "--arch", "squeeze.zoo:tiny_cnn", "--input-shape", "1x1x28x28"),
                   "--trust-pickle", sentinel=sentinel, out=out)
