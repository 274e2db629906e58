"""The `cli` fixture's runner: the squeeze app as a user calls it, its exit code and streams."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """Run the `squeeze` app in this process: the same click app, exit code and stdout/stderr streams a user gets
    from the console script, without a fresh interpreter's 2-3 s of imports and first exports per call (about a
    hundred calls in the suite). What needs a process of its own (a kill, Ctrl-C, the installed console script)
    starts one itself (tests/run/test_compress_resume.py, tests/test_cli.py)."""
    import squeeze.cli  # noqa: F401  (registers the commands)
    cli_app = importlib.import_module("squeeze.cli.app")

    out, err = io.StringIO(), io.StringIO()
    debug = cli_app._state["debug"]
    code: int = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or os.getcwd()):
        try:
            cli_app.app(args=[str(a) for a in args], prog_name="squeeze")
        except SystemExit as exc:  # click's standalone mode always ends in one
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            cli_app._state["debug"] = debug  # --debug is per invocation
    return CliResult(code, out.getvalue(), err.getvalue())
