"""The `squeeze` app: consoles, error handling, the options every command shares.

Exit codes: 0 ok; 1 gate failed / budget not met / parity failed; 2 bad input or usage (one line
on stderr, no traceback unless --debug); 3 internal error (traceback written to a log file).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import click
import typer
import typer.main
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape

from squeeze.errors import SqueezeError

# Commands generated from the passes' configs, built on first use by the module that registers them (a plugin-style
# load by name: this module never imports that one, which imports this one to register).
LAZY_COMMANDS = {name: "squeeze.cli.pass_commands" for name in ("distill", "prune", "quantize", "search")}
# their one-paragraph help, here so that the root --help lists them without building them (which imports torch)
PASS_SUMMARIES = {
    "distill": "Train a student from the teacher (KD, DIST, FitNet hints, RKD, SP; label-free with --label-free). The best epoch is "
               "picked on the calibration split and reported on the eval split. Killed runs resume on re-run.",
    "prune": "Structured pruning (Torch-Pruning dependency graph) chosen by latency measured on the target, recovered by layer "
             "distillation. Exit 1 when the budget is not met (the best model reached is still written).",
    "quantize": "INT8 quantization-aware distillation: PTQ, QAT against the teacher, QDQ ONNX checked against the target's rules. "
                "Exit 1 when parity fails or INT8 is slower than float without --allow-slower.",
    "search": "Search a student architecture for the teacher without training, under latency/params/MACs budgets. Writes "
              "OUT/student.json (what `squeeze distill --student` takes).",
}


class _LazyCommand(click.Command):
    """A pass command's stand-in until it is used: its summary for the root --help; the real command is built
    when it is invoked (its own --help included)."""

    def __init__(self, group: "LazyGroup", name: str):
        super().__init__(name, help=PASS_SUMMARIES.get(name, ""), short_help=PASS_SUMMARIES.get(name))
        self.group = group

    def make_context(self, info_name: Any, args: list[str], parent: Any = None, **extra: Any) -> Any:
        return self.group.load(self.name).make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """The pass commands are generated from the passes' typed configs, which import torch: they are built
    only when named (or when the root --help lists them), so `squeeze gate` and `squeeze targets` start fast."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            return _LazyCommand(self, name)
        return command

    def load(self, name: str) -> Any:
        """The real pass command, built once: importing its module registers it with the typer app."""
        command = self.commands.get(name)
        if command is None:
            import importlib

            importlib.import_module(LAZY_COMMANDS[name])
            info = next(c for c in app.registered_commands if c.name == name)
            command = typer.main.get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=app.rich_markup_mode)
            self.add_command(command, name)
        return command


app = typer.Typer(
    cls=LazyGroup,
    name="squeeze",
    help=(
        "Compress a trained PyTorch model for an edge target and measure it there.\n\n"
        "Examples:\n\n"
        "  squeeze compress samples/teachers/resnet_mnist.pt --target cpu --out out/\n\n"
        "  squeeze search samples/teachers/resnet_mnist.pt --data mnist --latency-budget 0.3ms --out search/\n\n"
        "  squeeze inspect samples/teachers/resnet_mnist.pt2\n\n"
        "  squeeze export samples/teachers/resnet_mnist.pt --out m.onnx --json\n\n"
        "  squeeze profile m.onnx --target cpu --json\n\n"
        "  squeeze targets"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(to_stderr: bool) -> Console:
    """A terminal gets rich's wrapping at its width; a pipe or log file gets whole lines (no 80-column
    wrap in the middle of a path or a table cell)."""
    stream = sys.stderr if to_stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=to_stderr)
    return Console(stderr=to_stderr, width=1000, soft_wrap=True)


stdout = _console(False)
stderr = _console(True)
_state = {"debug": bool(os.environ.get("SQUEEZE_DEBUG"))}

# Options shared by the commands that load a model.
ArchOpt = typer.Option(None, "--arch", help="module:factory that builds the architecture of a state_dict, e.g. mypkg.models:resnet18")
ShapeOpt = typer.Option(None, "--input-shape", help="input shape with batch, e.g. 1x3x32x32 (when the file does not record it)")
TrustOpt = typer.Option(False, "--trust-pickle", help="allow loading full pickles (runs code from the file: only for files you trust)")
OutputOpt = typer.Option(None, "--output", help="which output of a model that returns a tuple or dict to compress: its index or key "
                         "(the compressed model has that output alone)")
DataOpt = typer.Option(None, "--data", help="'mnist', 'digits', a .npz/.pt file, an image folder, or pkg.mod:fn")
JsonOpt = typer.Option(False, "--json", help="print one JSON document on stdout instead of tables")
# Options of the remote targets (jetson-*, ssh://) and TensorRT builds.
DeviceOpt = typer.Option(None, "--device", help="Jetson to build/measure on over SSH: user@host[:port] (host must be in known_hosts)")
PowerOpt = typer.Option(None, "--power-mode", help="Jetson nvpmodel mode (name like MAXN_SUPER, or id) to set before measuring")
IdentityOpt = typer.Option(None, "--identity-file", "-i", help="SSH private key (default: ssh-agent and ~/.ssh keys)")
KnownHostsOpt = typer.Option(None, "--known-hosts", help="known_hosts file to check the device's host key against (default ~/.ssh/known_hosts)")
PortOpt = typer.Option(None, "--port", help="SSH port (default 22, or the one in the address)")
RemotePythonOpt = typer.Option(None, "--remote-python", help="Python on an ssh:// target that has onnxruntime (default python3)")
PrecisionOpt = typer.Option(None, "--precision", help="TensorRT: strongly-typed (default; precision from the ONNX), or fp16/int8/best (TensorRT 10.x only); "
                           "openvino: f32 (default), bf16 or f16, OpenVINO's inference precision for the float layers")
TrtexecOpt = typer.Option(None, "--trtexec", help="trtexec path (default: /usr/src/tensorrt/bin/trtexec on a Jetson; PATH locally)")


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn squeeze errors into one stderr line + exit code; internal errors into a log pointer."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            stderr.print("interrupted; re-running the same command resumes from the last finished step")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"]:
                traceback.print_exc()
            exc = _as_user_error(exc)
            if isinstance(exc, SqueezeError):
                stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None
            fd, log = tempfile.mkstemp(prefix="squeeze-error-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                fh.write(traceback.format_exc())
            stderr.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (traceback in {log}; re-run with --debug)",
                         highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


def _as_user_error(exc: Exception) -> Exception:
    """A write that failed on the user's disk (full, read-only, no permission) is bad input, not a bug."""
    from squeeze.errors import UserInputError
    from squeeze.io.fsutil import WRITE_ERRNOS

    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return UserInputError(f"cannot write {exc.filename or 'a file'}: {exc.strerror}")
    return exc


def _quiet_libraries() -> None:
    """Library log lines and warnings are not ours to show: a bad input gets one line. --debug shows them."""
    if _state["debug"]:
        return
    import logging
    import warnings

    warnings.simplefilter("ignore")
    for name in ("torch", "paramiko", "onnxscript", "onnx_ir", "nncf", "modelopt"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _progress(as_json: bool) -> Callable[[str], None]:
    if as_json:
        from squeeze.api import silent

        return silent
    return lambda message: stderr.print(f"[dim]… {message}[/]", highlight=False)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    _state["debug"] = _state["debug"] or debug




def main() -> None:
    app()
