"""README.md's command examples, run as a newcomer would: from a fresh directory holding only samples/.

Every `squeeze ...` line of a fenced block is an example. Lines with placeholders (MODEL, D,
[--optional ...], a|b alternatives) or an input that no sample or earlier example provides (the
intro's `model.pt`) are not runnable and skipped. The runnable ones are run in README order in a
fresh temp dir, each must exit 0 and leave what it claims (its --out, a `→ path` in its comment,
one JSON document for --json). Those that train, or that need what a training example writes, run
only under `-m slow`; in the fast suite they, and the ones that need hardware (a Jetson, an SSH
host, TensorRT), are checked without running: their options parse, and compress resolves its recipe.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli_runner import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TRAINING = {"distill", "search", "prune", "quantize", "compress"}
VERDICT_EXIT = {"prune", "quantize"}  # exit 1 is their documented "budget not met / INT8 slower" verdict, outputs still written
# what a command writes inside its --out directory, from its --help
WRITES = {"compress": ("model.onnx", "teacher.onnx", "manifest.json", "report.html")}


@dataclass
class Example:
    line: int  # in README.md
    argv: list[str]  # after `squeeze`; for a `mkdir -p` line, the directories
    comment: str = ""
    kind: str = ""  # fast, slow, device, placeholder, hypothetical, setup
    outputs: list[str] = field(default_factory=list)  # --out and `→ path` claims, relative to the run directory
    inputs: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return "mkdir" if self.kind == "setup" else self.argv[0]

    def __str__(self) -> str:
        prefix = "mkdir -p" if self.kind == "setup" else "squeeze"
        return f"README.md:{self.line}: {prefix} {shlex.join(self.argv)}"


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced block, `\\` continuations joined."""
    lines, inside, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def _is_placeholder(token: str) -> bool:
    return any(mark in token for mark in ("[", "]", "|", "...")) or re.fullmatch(r"[A-Z][A-Z0-9_]*", token) is not None


def _option(argv: list[str], *names: str) -> str | None:
    for i, token in enumerate(argv[:-1]):
        if token in names:
            return argv[i + 1]
    return None


def _produced(path: str, outputs: set[str]) -> bool:
    path = path.rstrip("/")
    return any(path == out or path.startswith(out + "/") for out in outputs)


def readme_examples(text: str | None = None) -> list[Example]:
    """Every example of README.md in order, classified; exact repeats (the search line is shown twice) kept once."""
    examples, seen = [], set()
    available: dict[str, set[str]] = {"fast": set(), "any": set()}  # outputs of earlier fast / runnable examples
    for number, raw in _code_lines(README.read_text() if text is None else text):
        stripped = raw.strip()
        if not stripped.startswith(("squeeze ", "mkdir ")):
            continue
        tokens = shlex.split(stripped, comments=True)
        comment = stripped.split(" # ", 1)[1].strip() if " # " in stripped else ""
        if tokens[0] == "mkdir":
            dirs = [t for t in tokens[1:] if not t.startswith("-")]
            examples.append(Example(number, dirs, comment, "setup", outputs=[d.rstrip("/") for d in dirs]))
            continue
        if tuple(tokens) in seen:
            continue
        seen.add(tuple(tokens))
        examples.append(_classify(Example(number, tokens[1:], comment), available))
    return examples


def _classify(ex: Example, available: dict[str, set[str]]) -> Example:
    argv = ex.argv
    if any(_is_placeholder(t) for t in argv):
        ex.kind = "placeholder"
        return ex
    positional = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    student = _option(argv, "--student")
    ex.inputs = [p for p in (positional, student) if p and (p.endswith((".pt", ".pt2", ".onnx", ".json")) or "/" in p)]
    out = _option(argv, "--out", "-o")
    ex.outputs = [p.rstrip("/") for p in [out, *re.findall(r"→\s*(\S+)", ex.comment)] if p]
    in_repo = [p for p in ex.inputs if (ROOT / p).exists()]
    missing = [p for p in ex.inputs if p not in in_repo and not _produced(p, available["any"])]
    assert not [p for p in missing if p.startswith("samples/")], f"{ex} names a sample that does not exist"
    if missing:
        ex.kind = "hypothetical"
        return ex
    needs_slow = any(p not in in_repo and not _produced(p, available["fast"]) for p in ex.inputs)
    if ex.command == "build" or "--device" in argv or any(t.startswith("ssh://") for t in argv):
        ex.kind = "device"
    elif (ex.command in TRAINING and "--print-recipe" not in argv) or needs_slow:
        ex.kind = "slow"
    else:
        ex.kind = "fast"
    available["any"].update(ex.outputs)
    if ex.kind == "fast":
        available["fast"].update(ex.outputs)
    return ex


def run_examples(examples: list[Example], cwd: Path) -> list[tuple[Example, float]]:
    """Run each example in `cwd` through the squeeze app (in this process: conftest.run_cli); check its exit code and claims."""
    import time

    times = []
    for ex in examples:
        if ex.kind == "setup":
            for d in ex.argv:
                (cwd / d).mkdir(parents=True, exist_ok=True)
            continue
        start = time.perf_counter()
        result = run_cli(*ex.argv, cwd=cwd)
        times.append((ex, time.perf_counter() - start))
        allowed = (0, 1) if ex.command in VERDICT_EXIT else (0,)
        assert result.code in allowed, f"{ex} exited {result.code}:\n{result.stderr[-3000:]}"
        _check_claims(ex, cwd, result.stdout)
    return times


def _check_claims(ex: Example, cwd: Path, stdout: str) -> None:
    for out in ex.outputs:
        path = cwd / out
        assert path.exists(), f"{ex} did not write {out}"
        assert path.is_file() or any(path.iterdir()), f"{ex} left {out} empty"
    out_dir = _option(ex.argv, "--out", "-o")
    for name in WRITES.get(ex.command, ()) if out_dir else ():
        assert (cwd / out_dir / name).is_file(), f"{ex} did not write {out_dir}/{name}"
    if "--json" in ex.argv:
        assert isinstance(json.loads(stdout), (dict, list)), f"{ex}: --json printed no JSON document"
    if "--help" in ex.argv:
        assert "Usage" in stdout
    if "--print-recipe" in ex.argv:
        assert "passes:" in stdout


def parse_only(argv: list[str]) -> None:
    """Parse an example's command line exactly as the CLI would, without running the command.

    Raises (click's, as vendored by typer) UsageError on an unknown option or a value that does not parse.
    """
    import typer.main

    from squeeze.cli import app

    group = typer.main.get_command(app)
    parent = group.context_class(group, info_name="squeeze")
    command = group.get_command(parent, argv[0])
    assert command is not None, f"unknown command {argv[0]!r}"
    command.make_context(argv[0], list(argv[1:]), parent=parent)


def fresh_dir(tmp_path: Path) -> Path:
    """An empty directory with the bundled samples reachable at the relative paths the README uses."""
    run_dir = tmp_path / "newcomer"
    run_dir.mkdir()
    (run_dir / "samples").symlink_to(ROOT / "samples", target_is_directory=True)
    return run_dir


# ----------------------------------------------------------------------------------------------


def test_readme_has_runnable_examples_of_the_everyday_commands():
    examples = readme_examples()
    fast = {ex.command for ex in examples if ex.kind == "fast"}
    runnable = {ex.command for ex in examples if ex.kind in ("fast", "slow")}
    assert {"inspect", "export", "profile", "targets"} <= fast, fast
    assert {"gate", "compress", "distill", "search", "prune", "quantize"} <= runnable, runnable
    assert any(ex.kind == "placeholder" for ex in examples) and any(ex.kind == "device" for ex in examples)


def test_classifier_on_made_up_readme():
    text = "\n".join([
        "```", "squeeze export samples/teachers/resnet_mnist.pt --out a.onnx", "squeeze profile a.onnx --target cpu",
        "squeeze prune MODEL --data D --out p/", "squeeze compress model.pt --out o", "mkdir -p out",
        "squeeze compress samples/teachers/resnet_mnist.pt --recipe export \\", "    --out out/e   # → out/e/model.onnx",
        "squeeze gate out/e/manifest.json", "squeeze build a.onnx --target tensorrt --out a.engine", "```",
        "squeeze inspect outside/a/fence.pt",
    ])
    kinds = [(ex.command, ex.kind) for ex in readme_examples(text)]
    assert kinds == [("export", "fast"), ("profile", "fast"), ("prune", "placeholder"), ("compress", "hypothetical"), ("mkdir", "setup"),
                     ("compress", "slow"), ("gate", "slow"), ("build", "device")]
    continued = readme_examples(text)[5]
    assert continued.line == 7 and continued.outputs == ["out/e", "out/e/model.onnx"]
    with pytest.raises(AssertionError, match="names a sample that does not exist"):
        readme_examples("```\nsqueeze inspect samples/teachers/no_such.pt2\n```")


def test_readme_examples_never_write_to_the_same_place():
    """Examples that run here share one directory: none may write where another writes."""
    writers = [ex for ex in readme_examples() if ex.kind in ("fast", "slow") and ex.outputs]
    assert len(writers) >= 10
    for i, ex_a in enumerate(writers):
        for ex_b in writers[i + 1:]:
            for a in ex_a.outputs:
                for b in ex_b.outputs:
                    assert not _produced(a, {b}) and not _produced(b, {a}), f"{ex_a} and {ex_b} both write {a} / {b}"


def test_examples_not_run_here_parse():
    """Slow and device-only examples: every option exists and every value parses; compress resolves its recipe."""
    from typer.testing import CliRunner

    from squeeze.cli import app

    checked = [ex for ex in readme_examples() if ex.kind in ("slow", "device")]
    assert len(checked) >= 8
    for ex in checked:
        parse_only(ex.argv)
        if ex.command == "compress":
            result = CliRunner().invoke(app, [*ex.argv, "--print-recipe"])
            assert result.exit_code == 0 and "passes:" in result.output, f"{ex}: {result.output[-2000:]}"
    with pytest.raises(Exception, match="No such option: --no-such-flag"):
        parse_only(["prune", "samples/teachers/resnet_mnist.pt", "--no-such-flag"])
    with pytest.raises(Exception, match="valid integer"):
        parse_only(["compress", "samples/teachers/resnet_mnist.pt", "--threads", "zero"])


def test_fast_readme_examples_run_in_a_fresh_directory(tmp_path):
    examples = [ex for ex in readme_examples() if ex.kind in ("fast", "setup")]
    run_dir = fresh_dir(tmp_path)
    times = run_examples(examples, run_dir)
    assert [ex.command for ex, _ in times][:4] == ["--help", "inspect", "export", "profile"]
    assert (run_dir / "m.onnx").is_file()
    for ex, seconds in times:
        print(f"{seconds:6.1f} s  {ex}")


@pytest.mark.slow  # tens of minutes on 2 cores: search, two distillations, prune, QAD, three compress runs
def test_every_runnable_readme_example_runs_in_a_fresh_directory(tmp_path):
    examples = [ex for ex in readme_examples() if ex.kind in ("fast", "slow", "setup")]
    run_dir = fresh_dir(tmp_path)
    times = run_examples(examples, run_dir)
    assert {"gate", "compress", "distill", "search", "prune", "quantize"} <= {ex.command for ex, _ in times}
    for ex, seconds in times:
        print(f"{seconds:6.1f} s  {ex}")
