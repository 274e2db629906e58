"""The tree keeps its own rules: source files under 400 lines, functions under 80, no import cycles
between squeeze's modules, no pass importing another pass's internals, no target name branched on
outside targets/ (bench and tests aside)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = {"squeeze": "squeeze", "passes": "squeeze.passes", "targets": "squeeze.targets"}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def sources() -> dict[str, Path]:
    """module name -> file, for every source file of the package (as it installs: passes/ -> squeeze.passes)."""
    out = {}
    for folder, package in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


SOURCES = sources()


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_file_and_function_sizes(module):
    path = SOURCES[module]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.relative_to(ROOT)} has {len(text.splitlines())} lines"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def imports_of(module: str, path: Path) -> set[str]:
    """squeeze modules `module` imports, at any depth of the file (lazy imports count: a cycle is a cycle)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in SOURCES:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != module:
                found.add(name)
    return found


def test_no_import_cycles():
    graph = {m: imports_of(m, p) for m, p in SOURCES.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of design
    graph = {m: {d for d in deps if not (d.startswith(m + ".") or m.startswith(d + ".") and SOURCES[d].name == "__init__.py")}
             for m, deps in graph.items()}
    state: dict[str, int] = defaultdict(int)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state[d] == 1:
                return stack[stack.index(d):] + [d]
            if state[d] == 0:
                cycle = visit(d)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state[m] == 0:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_pass_imports_another_pass():
    passes = {m.split(".")[2] for m in SOURCES if m.startswith("squeeze.passes.") and m.count(".") >= 2} - {"base", "registry"}
    for module, path in SOURCES.items():
        if not module.startswith("squeeze.passes.") or module.split(".")[2] not in passes:
            continue
        own = module.split(".")[2]
        others = {d for d in imports_of(module, path) if d.startswith("squeeze.passes.") and d.split(".")[2] in passes - {own, "export"}}
        assert not others, f"{module} imports {sorted(others)}: share code through squeeze/train, squeeze/measure or squeeze/io"


def test_no_target_name_branches_outside_targets():
    names = {"cpu", "cuda", "tensorrt", "jetson", "ssh"}
    for module, path in SOURCES.items():
        if module.startswith("squeeze.targets"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in names for c in node.comparators):
                left = ast.unparse(node.left)
                assert "target" not in left and "name" not in left, f"{module}: branches on a target name ({ast.unparse(node)})"
