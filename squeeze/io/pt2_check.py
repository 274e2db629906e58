"""Check a `.pt2` archive before torch reads it: torch's deserializer turns several text fields
into code, so a crafted file can run anything without a single pickle in it.

What torch 2.13's `torch.export.load` + `ExportedProgram.module()` evaluate, and what we allow:
- every `expr_str` (symbolic shapes) goes to `sympy.sympify`, i.e. Python `eval`: allowed only
  as an expression of sympy constructors torch's printer writes (Symbol, Integer, Add, Mul, ...,
  the functions torch registers), symbol names, numbers and arithmetic. The keys of
  `range_constraints` are the same kind of expression.
- `guards_code` strings are pasted into a function and `exec`-ed: allowed only as comparisons
  and arithmetic over `L['<input>'].size()[i]` / `.stride()[i]` and integers.
- node `target`s and `as_operator` arguments are resolved by getattr on torch, `operator` and
  `math`, and any callable found becomes a graph call: only ATen/prims/quantized ops, a short list
  of higher-order ops, and the `operator`/`math`/`torch.sym_*` functions torch emits. Extension
  (`#...`) targets and torchbind custom objects are refused; `source_fn_stack` names are checked.
- pytree specs (`in_spec`/`out_spec`) name container types: only the standard containers.
- members: the current archive layout only (no legacy 2.x zip, whose loader takes another path),
  no AOTInductor binaries (`data/aotinductor/`: native code that torch would dlopen), no absolute,
  `..` or backslash names.
Pickled members are checked separately (modelio's weights-only scan, skipped by --trust-pickle);
these checks run always: a file torch wrote itself passes them.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from squeeze.errors import UntrustedPickleError, UserInputError

MAX_EXPR_CHARS = 20_000
MAX_EXPR_DEPTH = 60

# sympy constructors torch's srepr printer writes, plus the functions torch registers for sympify
# (torch/_export/serde/serialize.py: sympy_functions).
SYMPY_CALLS = frozenset(
    """Symbol Dummy Integer Float Rational Add Mul Pow Mod Max Min Abs floor ceiling sign
    Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan LessThan StrictGreaterThan GreaterThan
    And Or Not Xor Piecewise ExprCondPair Tuple IntInfinity NegativeIntInfinity
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift
    PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat
    TruncToInt RoundToInt RoundDecimal ToFloat Identity BitwiseFn_bitwise_and BitwiseFn_bitwise_or""".split()
)
SYMPY_NAMES = frozenset("oo zoo nan true false pi E int_oo True False None".split())
SYMPY_ASSUMPTIONS = frozenset(
    """positive negative nonnegative nonpositive integer real finite infinite zero nonzero
    rational even odd prime commutative extended_real precision""".split()
)
SYMBOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
POW_CALLS = frozenset({"Pow", "PowByNatural", "FloatPow"})
MAX_INT = 2**64  # larger literals, or numeric powers beyond MAX_POWER, only serve to hang sympy
MAX_POWER = 64


def _resolving_names() -> frozenset[str]:
    """Bare names sympify resolves to an object (Python builtins, sympy's namespace) instead of a new
    Symbol: in an expression they could only smuggle a callable in, so they are refused."""
    import builtins

    import sympy

    return frozenset(dir(builtins)) | frozenset(dir(sympy))
FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

TARGET_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"^torch\.ops\.(aten|prims|quantized_decomposed|quantized)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$",
        r"^torch\.ops\.higher_order\.(cond|while_loop|map_impl|scan|wrap_with_set_grad_enabled|wrap_with_autocast|auto_functionalized|auto_functionalized_v2|with_effects)$",
        r"^_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|xor|not_|invert|lshift|rshift)$",
        r"^torch\.(sym_int|sym_float|sym_max|sym_min|sym_not|sym_ite|sym_sqrt|sym_sum|_sym_sqrt)$",
        r"^math\.(ceil|floor|trunc|sqrt|exp|log|sin|cos|tan|pow)$",
    )
)
SOURCE_FN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TREESPEC_TYPES = frozenset(
    {None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict", "collections.defaultdict",
     "collections.deque", "torch.fx.immutable_collections.immutable_list", "torch.fx.immutable_collections.immutable_dict"}
)
GUARD_METHODS = frozenset({"size", "stride"})
ALLOWED_MEMBERS = re.compile(
    r"^(archive_format|archive_version|byteorder|version|\.data/[A-Za-z0-9_]+|models/[A-Za-z0-9_.-]+\.json|"
    r"data/(weights|constants)/[A-Za-z0-9_.-]+|data/sample_inputs/[A-Za-z0-9_.-]+\.pt|extra/[A-Za-z0-9_.-]+)$"
)


_RESOLVING = _resolving_names() - SYMPY_NAMES


class Pt2Refusal(UserInputError):
    """A `.pt2` member or field outside what torch itself writes."""


def _refuse(path: Path, member: str, field: str, why: str) -> Pt2Refusal:
    return Pt2Refusal(f"refusing {path}: {member} field {field} {why}; squeeze loads only what torch.export.save writes")


def _expr_ok(node: ast.AST, depth: int = 0) -> bool:
    """An expression of allow-listed sympy constructors, symbol names, numbers and operators."""
    if depth > MAX_EXPR_DEPTH:
        return False
    if isinstance(node, ast.Expression):
        return _expr_ok(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        return (isinstance(node.value, (int, float, bool)) and abs(node.value) < MAX_INT) or node.value is None
    if isinstance(node, ast.Name):
        return node.id in SYMPY_NAMES or (bool(SYMBOL_NAME.match(node.id)) and node.id not in _RESOLVING)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd, ast.Not, ast.Invert)) and _expr_ok(node.operand, depth + 1)
    if isinstance(node, ast.BinOp):
        ops = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr, ast.LShift, ast.RShift)
        if isinstance(node.op, ast.Pow) and not _small_exponent(node.right):
            return False
        return isinstance(node.op, ops) and _expr_ok(node.left, depth + 1) and _expr_ok(node.right, depth + 1)
    if isinstance(node, ast.BoolOp):
        return all(_expr_ok(v, depth + 1) for v in node.values)
    if isinstance(node, ast.Compare):
        return _expr_ok(node.left, depth + 1) and all(_expr_ok(c, depth + 1) for c in node.comparators)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in SYMPY_CALLS:
            return False
        if node.func.id in POW_CALLS and len(node.args) == 2 and not _small_exponent(node.args[1]):
            return False
        for i, arg in enumerate(node.args):
            text = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            if text:  # only a symbol's name or a float's digits
                pattern = SYMBOL_NAME if node.func.id in ("Symbol", "Dummy") and i == 0 else FLOAT_TEXT if node.func.id == "Float" else None
                if pattern is None or not pattern.match(arg.value):
                    return False
            elif not _expr_ok(arg, depth + 1):
                return False
        return all(
            kw.arg in SYMPY_ASSUMPTIONS and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (bool, int))
            for kw in node.keywords
        )
    return False


def _small_exponent(node: ast.AST) -> bool:
    """A symbolic exponent is never evaluated to a number; a numeric one must be one small literal."""
    symbolic = any(
        (isinstance(n, ast.Name) and n.id not in SYMPY_NAMES and n.id not in SYMPY_CALLS)
        or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("Symbol", "Dummy"))
        for n in ast.walk(node)
    )
    if symbolic:
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and len(node.args) == 1:
        node = node.args[0]
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and abs(node.value) <= MAX_POWER


def check_expression(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return _expr_ok(tree)


def _guard_ok(node: ast.AST, depth: int = 0) -> bool:
    """Comparisons and arithmetic over L['name'].size()[i] / .stride()[i] and integers."""
    if depth > MAX_EXPR_DEPTH:
        return False
    if isinstance(node, ast.Expression):
        return _guard_ok(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, bool))
    if isinstance(node, ast.Subscript):  # L['x'].size()[0]
        call, index = node.value, node.slice
        return (
            isinstance(index, ast.Constant) and type(index.value) is int
            and isinstance(call, ast.Call) and not call.args and not call.keywords
            and isinstance(call.func, ast.Attribute) and call.func.attr in GUARD_METHODS
            and _is_input_ref(call.func.value)
        )
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)) and _guard_ok(node.operand, depth + 1)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow)) and _guard_ok(node.left, depth + 1) and _guard_ok(node.right, depth + 1)
    if isinstance(node, ast.BoolOp):
        return all(_guard_ok(v, depth + 1) for v in node.values)
    if isinstance(node, ast.Compare):
        return _guard_ok(node.left, depth + 1) and all(_guard_ok(c, depth + 1) for c in node.comparators)
    return False


def _is_input_ref(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "L"
        and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str) and bool(SYMBOL_NAME.match(node.slice.value))
    )


def check_guard(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        return False
    try:
        return _guard_ok(ast.parse(text, mode="eval"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def check_target(text: Any) -> bool:
    return isinstance(text, str) and any(p.match(text) for p in TARGET_PATTERNS)


def _treespec_types(spec: Any) -> Iterator[Any]:
    if isinstance(spec, dict):
        yield spec.get("type")
        for child in spec.get("children_spec") or []:
            yield from _treespec_types(child)


def _walk(obj: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every dict entry in a JSON tree."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, str(key), value
            yield from _walk(value, here)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{path}[{i}]")


def check_program_json(doc: Any, path: Path, member: str) -> None:
    """Every field of a serialized ExportedProgram that torch evaluates, against its grammar."""
    if not isinstance(doc, dict):
        raise _refuse(path, member, "(root)", "is not a JSON object")
    for i, guard in enumerate(doc.get("guards_code") or []):
        if not check_guard(guard):
            raise _refuse(path, member, f"guards_code[{i}]", f"is not a plain shape guard ({str(guard)[:60]!r})")
    for key in (doc.get("range_constraints") or {}):
        if not check_expression(key):
            raise _refuse(path, member, f"range_constraints[{key[:40]!r}]", "is not a symbolic-shape expression")
    for where, key, value in _walk(doc, ""):
        if key == "expr_str" and not check_expression(value):
            raise _refuse(path, member, where, f"is not a symbolic-shape expression ({str(value)[:60]!r})")
        elif key == "target" and isinstance(value, str) and ".nodes[" in where and not check_target(value):
            raise _refuse(path, member, where, f"names an operator outside ATen/prims ({value[:60]!r})")
        elif key == "as_operator" and not check_target(value):
            raise _refuse(path, member, where, f"names an operator outside ATen/prims ({str(value)[:60]!r})")
        elif key in ("as_custom_obj", "custom_obj_values") and value:
            raise _refuse(path, member, where, "holds a TorchScript custom object (torchbind)")
        elif key == "source_fn_stack" and isinstance(value, str):
            for entry in value.split(";"):
                name = entry.rsplit(",", 1)[-1]
                if not SOURCE_FN.match(name) or name.startswith("#"):
                    raise _refuse(path, member, where, f"names {name[:60]!r}")
        elif key in ("in_spec", "out_spec") and isinstance(value, str):
            _check_treespec(value, path, member, where)


def _check_treespec(value: str, path: Path, member: str, where: str) -> None:
    try:
        protocol, spec = json.loads(value)
    except (ValueError, TypeError):
        raise _refuse(path, member, where, "is not a pytree spec") from None
    bad = [t for t in _treespec_types(spec) if t not in TREESPEC_TYPES]
    if bad:
        raise _refuse(path, member, where, f"names container type {str(bad[0])[:60]!r} (only tuple/list/dict and friends)")


def check_members(zf: zipfile.ZipFile, path: Path) -> list[str]:
    """Member names: one root folder, nothing outside it, only the current layout's files."""
    names = zf.namelist()
    for name in names:
        if name.startswith(("/", "\\")) or "\\" in name or "\x00" in name or ".." in name.split("/") or re.match(r"^[A-Za-z]:", name):
            raise Pt2Refusal(f"refusing {path}: member name {name[:80]!r} points outside the archive")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise Pt2Refusal(f"refusing {path}: not the layout torch.export.save writes (members outside one root folder)")
    inner = [name.split("/", 1)[1] for name in names]
    if "archive_format" not in inner:
        raise Pt2Refusal(f"refusing {path}: a legacy .pt2 layout (torch < 2.7); re-save it with torch.export.save on a current torch")
    for name in inner:
        if name.startswith("data/aotinductor/"):
            raise Pt2Refusal(f"refusing {path}: it carries AOTInductor binaries ({name[:80]}), native code torch would load")
        if name and not name.endswith("/") and not ALLOWED_MEMBERS.match(name):
            raise Pt2Refusal(f"refusing {path}: unexpected member {name[:80]!r} (not part of what torch.export.save writes)")
    return names


def check_pt2(path: Path) -> None:
    """All checks of this module on one archive; raises Pt2Refusal (exit 2) naming what failed."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = check_members(zf, path)
            for member in (n for n in names if "/models/" in n and n.endswith(".json")):
                try:
                    doc = json.loads(zf.read(member))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    raise Pt2Refusal(f"refusing {path}: {member} is not valid JSON") from None
                check_program_json(doc, path, member)
    except zipfile.BadZipFile as exc:
        raise UserInputError(f"model file is corrupt or truncated: {path} ({exc})") from None


def scan_pickles(path: Path, refusal: str) -> None:
    """Refuse a .pt2 with any member torch would unpickle beyond the weights-only unpickler.

    torch.export.load tries weights_only=True and then silently falls back to full unpickling
    (and loads `use_pickle` weights and custom objects with full unpickling outright). Members it
    unpickles: torch.save blobs (*.pt: sample inputs, legacy state dicts), weights/constants the
    payload configs mark `use_pickle`, and custom/opaque objects. Raw tensor bytes are not pickles.
    """
    import torch

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        suspects = [n for n in names if n.endswith(".pt")]
        for config_name in (n for n in names if n.endswith("_config.json") and "/data/" in n):
            folder = config_name.rsplit("/", 1)[0]
            try:
                entries = json.loads(zf.read(config_name)).get("config", {})
            except ValueError:
                raise UserInputError(f"model file is corrupt: {path} (unreadable {config_name})") from None
            for fqn, entry in entries.items():
                member = f"{folder}/{entry.get('path_name', '')}"
                if entry.get("path_name", "").startswith(("custom_obj", "opaque_obj")):
                    raise UntrustedPickleError(refusal.format(path=path, what=f"a pickled custom object ({fqn})"))
                if entry.get("use_pickle") and member in names:
                    suspects.append(member)
        for member in suspects:
            try:
                torch.load(io.BytesIO(zf.read(member)), map_location="cpu", weights_only=True)
            except Exception:
                raise UntrustedPickleError(refusal.format(path=path, what=f"a pickled object ({member})")) from None
