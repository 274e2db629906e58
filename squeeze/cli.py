"""`squeeze` command line: a thin shell over squeeze.api.

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
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from squeeze.errors import SqueezeError

app = typer.Typer(
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
DataOpt = typer.Option(None, "--data", help="'mnist', 'digits', a .npz/.pt file, an image folder, or pkg.mod:fn")
JsonOpt = typer.Option(False, "--json", help="print one JSON document on stdout instead of tables")
# Options of the remote targets (jetson-*, ssh://) and TensorRT builds.
DeviceOpt = typer.Option(None, "--device", help="Jetson to build/measure on over SSH: user@host[:port] (host must be in known_hosts)")
PowerOpt = typer.Option(None, "--power-mode", help="Jetson nvpmodel mode (name like MAXN_SUPER, or id) to set before measuring")
IdentityOpt = typer.Option(None, "--identity-file", "-i", help="SSH private key (default: ssh-agent and ~/.ssh keys)")
KnownHostsOpt = typer.Option(None, "--known-hosts", help="known_hosts file to check the device's host key against (default ~/.ssh/known_hosts)")
PortOpt = typer.Option(None, "--port", help="SSH port (default 22, or the one in the address)")
RemotePythonOpt = typer.Option(None, "--remote-python", help="Python on an ssh:// target that has onnxruntime (default python3)")
PrecisionOpt = typer.Option(None, "--precision", help="TensorRT: strongly-typed (default; precision from the ONNX), or fp16/int8/best (TensorRT 10.x only)")
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


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _latency_table(stats: dict[str, Any], title: str) -> Table:
    caption = (f"batch {stats['batch_size']}, {stats['threads']} threads, {stats['iterations']} runs after {stats['warmup']} warm-up, "
               f"{stats['runtime']} {stats['runtime_version']} on {', '.join(stats['providers'])}")
    table = Table(title=title, caption=caption)
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "CoV"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{stats[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms")), f"{stats['cov'] * 100:.1f}%")
    return table


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    _state["debug"] = _state["debug"] or debug


@app.command()
@handled
def inspect(
    model: Path = typer.Argument(..., help="model file (.pt2, TorchScript, checkpoint/state_dict, .onnx)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Input spec, parameters, MACs and a layer summary.

    Example: squeeze inspect samples/teachers/resnet_mnist.pt2
    """
    from squeeze import api

    result = api.inspect(model, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    if as_json:
        return _emit_json(result)
    spec = result["input_spec"]
    stdout.print(f"[bold]{model}[/] ({result['format']}, sha256 {result['sha256'][:12]})")
    stdout.print(f"input  {spec['name']}: {'x'.join(map(str, spec['shape']))} {spec['dtype']}"
                 f"{' (dynamic batch)' if spec['dynamic_batch'] else ''}")
    stdout.print(f"params {_fmt_count(result['params'])}   MACs {_fmt_count(result['macs'])} per sample")
    if result.get("metadata", {}).get("eval_accuracy") is not None:
        meta = result["metadata"]
        stdout.print(f"recorded accuracy {meta['eval_accuracy'] * 100:.2f}% on the eval split of {meta.get('dataset')}")
    if result.get("layers"):
        table = Table(title="layers")
        for col in ("name", "type", "output", "params", "MACs"):
            table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
        for row in result["layers"]:
            table.add_row(row["name"], row["type"], "x".join(map(str, row["output_shape"] or [])), _fmt_count(row["params"]), _fmt_count(row["macs"]))
        stdout.print(table)
    ops = result.get("layer_types") or result.get("ops") or {}
    stdout.print("layer types: " + ", ".join(f"{k}×{v}" for k, v in ops.items()))


@app.command()
@handled
def export(
    model: Path = typer.Argument(..., help="torch model file"),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (its directory must exist)"),
    data: Optional[str] = DataOpt,
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17-23)"),
    exporter: str = typer.Option("dynamo", "--exporter", help="dynamo (default) or legacy (TorchScript-based)"),
    static_batch: bool = typer.Option(False, "--static-batch", help="fix the batch dimension instead of making it dynamic"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export to ONNX and check parity (torch vs ONNX Runtime) on real eval samples.

    Example: squeeze export samples/teachers/resnet_mnist.pt --out m.onnx --json
    """
    from squeeze import api

    result = api.export(model, out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                        opset=opset, exporter=exporter, dynamic_batch=not static_batch)
    if as_json:
        return _emit_json(result)
    parity = result["parity"]
    stdout.print(f"wrote [bold]{result['path']}[/] (opset {result['opset']}, {result['bytes'] / 1e6:.2f} MB, {result['exporter']} exporter)")
    stdout.print(f"parity on {parity['inputs']}: max |diff| {parity['max_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.4f} — passed")


@app.command()
@handled
def profile(
    model: Path = typer.Argument(..., help=".onnx file, or a torch model (exported with a parity check first)"),
    target: str = typer.Option("cpu", "--target", "-t", help="see `squeeze targets`"),
    batch_size: int = typer.Option(1, "--batch-size", "-b"),
    warmup: int = typer.Option(20, "--warmup", help="untimed runs first"),
    iterations: int = typer.Option(200, "--iterations", "-n", help="timed runs"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads (default: all usable cores)"),
    data: Optional[str] = DataOpt,
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    device: Optional[str] = DeviceOpt,
    power_mode: Optional[str] = PowerOpt,
    identity_file: Optional[str] = IdentityOpt,
    known_hosts: Optional[str] = KnownHostsOpt,
    port: Optional[int] = PortOpt,
    remote_python: Optional[str] = RemotePythonOpt,
    precision: Optional[str] = PrecisionOpt,
    trtexec: Optional[str] = TrtexecOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Measure latency on a target's runtime: p50/p90/p99/mean/std/min, CoV, providers, threads.

    Jetson targets build and time a TensorRT engine on --device over SSH; without a device they
    PREDICT (labelled, never passed off as measured) and print the on-device commands. ssh://
    targets run ONNX Runtime on the remote CPU. An .engine built by `squeeze build` is timed as is.

    Examples: squeeze profile m.onnx --target cpu --json

      squeeze profile m.onnx --target jetson-orin-nano --device nvidia@jetson --power-mode MAXN_SUPER

      squeeze profile m.onnx --target ssh://pi@raspberrypi --remote-python /usr/bin/python3
    """
    from squeeze import api

    result = api.profile(model, target=target, batch_size=batch_size, warmup=warmup, iterations=iterations, threads=threads,
                         data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, device=device, power_mode=power_mode,
                         identity_file=identity_file, known_hosts=known_hosts, port=port, remote_python=remote_python,
                         precision=precision, trtexec=trtexec)
    if as_json:
        return _emit_json(result)
    _print_latency(result, f"{model} on {result['target']}")


@app.command()
@handled
def targets(as_json: bool = JsonOpt) -> None:
    """Known targets, and whether each can build and measure on this machine (and if not, why).

    Example: squeeze targets --json
    """
    from squeeze import api

    rows = api.list_targets()
    if as_json:
        return _emit_json(rows)
    table = Table(title="targets")
    for col in ("name", "available", "description", "why / what"):
        table.add_column(col, overflow="fold")
    for row in rows:
        state = "[green]yes[/]" if row["available"] else "[yellow]predicts[/]" if row.get("predicts") else "[red]no[/]"
        table.add_row(row["name"], state, escape(row["description"]), escape(row["reason"]))
    stdout.print(table)


@app.command()
@handled
def compress(
    model: Path = typer.Argument(..., help="the trained teacher"),
    target: str = typer.Option("cpu", "--target", "-t", help="see `squeeze targets`"),
    out: Path = typer.Option(Path("squeeze-out"), "--out", "-o", help="output directory (created; its parent must exist)"),
    data: Optional[str] = DataOpt,
    latency_budget: Optional[str] = typer.Option(None, "--latency-budget", help="gate: p90 latency on the target, e.g. 5ms"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="gate: accuracy drop allowed, percentage points"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="full (default: search, distill, prune, INT8 QAD, profile), quick, distill (of --student), export (no compression), or a YAML file; see --print-recipe"),
    print_recipe: bool = typer.Option(False, "--print-recipe", help="print the effective recipe as YAML and exit (no work)"),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="timed runs when profiling (default 200)"),
    student: Optional[str] = typer.Option(None, "--student", help="distil this student (JSON spec or pkg.mod:factory) instead of searching one"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="distillation epochs (overrides the recipe)"),
    loss: Optional[str] = typer.Option(None, "--loss", help="distillation loss (overrides the recipe), see `squeeze distill --help`"),
    label_free: Optional[bool] = typer.Option(None, "--label-free/--with-labels", help="distil without labels (overrides the recipe)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="reuse finished passes and resume unfinished ones from the pass cache"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="pass cache (default $SQUEEZE_CACHE_DIR or ~/.cache/squeeze/runs)"),
    device: Optional[str] = DeviceOpt,
    power_mode: Optional[str] = PowerOpt,
    identity_file: Optional[str] = IdentityOpt,
    known_hosts: Optional[str] = KnownHostsOpt,
    port: Optional[int] = PortOpt,
    remote_python: Optional[str] = RemotePythonOpt,
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compress a model for a target: search a student, distil, prune, quantize (INT8), measure, gate.

    Runs a recipe of passes (default `full`; `--recipe quick` for a few minutes; a YAML file for
    your own); writes model.onnx, teacher.onnx, manifest.json and report.html/.md.

    Every stage is measured (accuracy and teacher agreement on the eval split, params, MACs, size,
    latency on the target). Finished passes are cached by content: re-running skips them, and a
    killed run resumes at the pass it was in (training passes from their last epoch). Exit 1 when a
    requested gate (--latency-budget, --max-accuracy-drop) fails; `squeeze gate` re-checks later.

    Example: squeeze compress samples/teachers/resnet_mnist.pt --target cpu --out out/ --latency-budget 5ms
    """
    from squeeze import api
    from squeeze.targets.base import ProfileSpec

    distill = {k: v for k, v in {"epochs": epochs, "loss": loss, "label_free": label_free}.items() if v is not None}
    overrides = {"distill": distill} if distill else {}
    if print_recipe:
        sys.stdout.write(api.print_recipe(recipe, student=student is not None, overrides=overrides))
        return
    import contextlib

    from squeeze.run.compress import effective_recipe
    from squeeze.run.progress import PipelineProgress

    progress: Any = _progress(True) if as_json else PipelineProgress(stderr, effective_recipe(recipe, student=student is not None).names())
    with contextlib.nullcontext() if as_json else progress:
        result = api.compress(model, target=target, out=out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                              latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop,
                              profile_spec=ProfileSpec(iterations=iterations) if iterations is not None else None, student=student,
                              recipe=recipe, overrides=overrides, resume=resume, cache_dir=cache_dir, progress=progress, command=sys.argv,
                              device=device, power_mode=power_mode, identity_file=identity_file, known_hosts=known_hosts, port=port,
                              remote_python=remote_python)
    if as_json:
        return _emit_result(result)
    stdout.print(f"wrote [bold]{out}/model.onnx[/], manifest.json and report.html")
    stdout.print(_stage_table(result))
    for check in result["gate"]["checks"]:
        stdout.print(f"gate {check['check']}: {check['value']:.4g} vs limit {check['limit']:.4g} — {'pass' if check['passed'] else 'FAIL'}")
    stdout.print(f"verdict: [bold]{result['gate']['verdict']}[/]")
    if result["gate"]["verdict"] != "pass":
        raise typer.Exit(1)


def _emit_result(result: dict[str, Any]) -> None:
    _emit_json(result)
    if result["gate"]["verdict"] != "pass":
        raise typer.Exit(1)


def _stage_table(result: dict[str, Any]) -> Table:
    """The stage table, narrowed to what fits a terminal (report.html has every column)."""
    from squeeze.run.report import STAGE_HEADER, stage_rows

    tl, lat = result["teacher_latency"], result["latency"]
    keep = ["stage", "accuracy", "agreement", "params", "MACs", "p50 ms", "p90 ms"]
    table = Table(title=f"stages on {result['target']['name']}",
                  caption=f"teacher p50 {tl['p50_ms']:.3f} ms → output p50 {lat['p50_ms']:.3f} ms ({result['speedup_p50']:.1f}× faster)")
    for i, col in enumerate(keep):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in stage_rows(result):
        table.add_row(*(escape(row[STAGE_HEADER.index(col)]) for col in keep))
    return table


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


@app.command()
@handled
def gate(
    manifest: Path = typer.Argument(..., help="manifest.json written by `squeeze compress` (or its directory)"),
    max_latency_ms: Optional[str] = typer.Option(None, "--max-latency-ms", help="absolute latency budget, e.g. 3 or 3ms (the manifest's measurement)"),
    percentile: int = typer.Option(90, "--percentile", help="latency percentile the latency checks use: 50, 90 or 99"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="percentage points below the teacher"),
    max_size_mb: Optional[float] = typer.Option(None, "--max-size-mb", help="ONNX file size budget"),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="a stored manifest to compare against"),
    max_regression: Optional[str] = typer.Option(None, "--max-regression", help="latency regression allowed vs --baseline, e.g. 10%"),
    max_accuracy_regression: Optional[float] = typer.Option(None, "--max-accuracy-regression", help="percentage points below --baseline's accuracy"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="ONNX re-measured interleaved with the model (noise-robust ratio mode)"),
    max_latency_ratio: Optional[float] = typer.Option(None, "--max-latency-ratio", help="model / reference latency allowed, e.g. 0.5"),
    ratio_ci: float = typer.Option(0.03, "--ratio-ci", help="ratio mode: measure until the 95% CI half-width is within this fraction"),
    time_cap: float = typer.Option(60.0, "--time-cap", help="ratio mode: stop measuring after this many seconds"),
    allow_predicted: bool = typer.Option(False, "--allow-predicted", help="gate on predicted (not measured) latency"),
    override_verdict: bool = typer.Option(False, "--override-verdict",
                                          help="let these checks replace a failed compress-time verdict (parity still binds; recorded)"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="also write JUnit XML here (one testcase per check)"),
    as_json: bool = JsonOpt,
) -> None:
    """Gate a compress result for CI: exit 0 pass, 1 fail, 2 bad input.

    Absolute budgets read the manifest; --baseline compares with a stored manifest (as a ratio to
    the teacher measured in the same run when both have it, which cancels runner speed);
    --reference re-measures the model and a reference model interleaved on this machine and gates
    on their latency ratio, repeating until its confidence interval is tight or --time-cap hits.

    Example: squeeze gate out/manifest.json --max-latency-ms 3 --max-accuracy-drop 1.0 --junit gate.xml
    """
    from squeeze import api

    result = api.gate(manifest, max_latency_ms=max_latency_ms, percentile=percentile, max_accuracy_drop=max_accuracy_drop,
                      max_size_mb=max_size_mb, baseline=baseline, max_regression=max_regression,
                      max_accuracy_regression=max_accuracy_regression, reference=reference, max_latency_ratio=max_latency_ratio,
                      ratio_ci=ratio_ci, time_cap_s=time_cap, allow_predicted=allow_predicted, junit=junit,
                      override_verdict=override_verdict, progress=_progress(as_json))
    if as_json:
        _emit_json(result)
    else:
        table = Table(title=f"gate: {manifest}")
        for col in ("check", "value", "limit", "result"):
            table.add_column(col, justify="left" if col == "check" else "right")
        for c in result["checks"]:
            table.add_row(c["check"], _cell(c["value"]), _cell(c["limit"]), "[green]pass[/]" if c["passed"] else "[red]FAIL[/]")
        stdout.print(table)
        if "ratio" in result:
            r = result["ratio"]
            stdout.print(f"ratio mode: model/reference p{r['percentile']} = {r['ratio']:.3f} (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}, "
                         f"{r['rounds']} rounds in {r['seconds']:.1f}s{'' if r['tight'] else ', time cap hit before the CI was tight'})")
        stdout.print(f"verdict: [bold]{result['verdict']}[/]")
    if result["verdict"] != "pass":
        raise typer.Exit(1)


@app.command()
@handled
def distill(
    teacher: Path = typer.Argument(..., help="the trained teacher"),
    student: str = typer.Option(..., "--student", help="student spec JSON ({\"arch\": \"squeeze.zoo:ResNet\", \"kwargs\": {...}}) or pkg.mod:factory"),
    data: Optional[str] = DataOpt,
    out: Path = typer.Option(Path("distill-out"), "--out", "-o", help="run directory (created; re-running resumes)"),
    epochs: int = typer.Option(20, "--epochs"),
    loss: str = typer.Option("kd", "--loss", help="'+'-joined terms: kd, dist, ce, fitnet, rkd, sp; optional weights: kd=0.9+ce=0.1"),
    temperature: float = typer.Option(4.0, "--temperature", "-T"),
    alpha: float = typer.Option(0.9, "--alpha", help="weight of the logit terms; CE on labels gets 1 - alpha"),
    label_free: bool = typer.Option(False, "--label-free", help="train on teacher outputs alone, never on labels"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default 0.05 SGD, 2e-3 AdamW)"),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    augment: str = typer.Option("auto", "--augment", help="auto (the dataset's default), none, shift (2-pixel translation) or crop-flip (CIFAR)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (mixed precision on CUDA)"),
    feature_pairs: Optional[str] = typer.Option(None, "--feature-pairs", help="FitNet layer pairs student=teacher, comma-separated (default: stage outputs)"),
    nproc: int = typer.Option(1, "--nproc", help="DistributedDataParallel over N local processes (gloo on CPU, NCCL on GPUs)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train a student from the teacher (KD, DIST, FitNet hints, RKD, SP; label-free with --label-free).

    The best epoch is picked on the calibration split and reported on the eval split, next to the
    teacher's accuracy and the student's top-1 agreement with it. Killed runs resume on re-run.

    Example: squeeze distill samples/teachers/resnet_mnist.pt --student student.json --data mnist --epochs 5 --loss kd+dist --out distill/
    """
    from squeeze import api

    result = api.distill(teacher, student, data=data, out=out, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                         progress=_progress(as_json), epochs=epochs, loss=loss, temperature=temperature, alpha=alpha,
                         label_free=label_free, optimizer=optimizer, lr=lr, batch_size=batch_size, augment=augment, seed=seed, device=device, nproc=nproc,
                         feature_pairs=_parse_pairs(feature_pairs))
    if as_json:
        return _emit_json({k: v for k, v in result.items() if k != "history"})
    ev = result["eval"]
    fmt = lambda v: "-" if v is None else f"{v * 100:.2f}%"  # noqa: E731
    stdout.print(f"wrote [bold]{result.get('student_file', out)}[/] (best epoch {result['best_epoch']}, {result['selected_on']})")
    stdout.print(f"eval split ({ev['samples']} samples): student {fmt(ev['student_accuracy'])}, teacher {fmt(ev['teacher_accuracy'])}, "
                 f"top-1 agreement {fmt(ev['agreement'])}")
    stdout.print(f"student {_fmt_count(result['student']['params'])} params, {_fmt_count(result['student']['macs'])} MACs; "
                 f"teacher {_fmt_count(result['teacher']['params'])} params, {_fmt_count(result['teacher']['macs'])} MACs")


@app.command()
@handled
def quantize(
    model: Path = typer.Argument(..., help="the float model to quantize"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="teacher for the distillation losses (default: the float model itself)"),
    data: Optional[str] = DataOpt,
    target: str = typer.Option("cpu", "--target", "-t", help="cpu, tensorrt, jetson-orin-nano, ... (its QuantRules pick the backend)"),
    out: Path = typer.Option(Path("quant"), "--out", "-o", help="output directory (created atomically; its parent must exist)"),
    epochs: int = typer.Option(3, "--epochs", help="QAT epochs after PTQ (0 = PTQ only)"),
    calib_samples: int = typer.Option(512, "--calib-samples", help="calibration samples for the PTQ scales"),
    bits: int = typer.Option(8, "--bits", help="8 (4 is refused: see the README)"),
    lr: float = typer.Option(5e-4, "--lr", help="QAT learning rate (SGD, cosine)"),
    train_samples: int = typer.Option(0, "--train-samples", help="QAT on a seeded subset of the train split (0 = all)"),
    loss: str = typer.Option("kd", "--loss", help="distillation loss terms, as in `squeeze distill` (kd, dist, ce, fitnet, ...)"),
    scale_update_epochs: int = typer.Option(0, "--scale-update-epochs", help="re-estimate activation scales after each of the first N epochs, then freeze"),
    backend: str = typer.Option("auto", "--backend", help="auto (from the target's rules), modelopt or torch-fx"),
    allow_slower: bool = typer.Option(False, "--allow-slower", help="ship the INT8 model even if it is slower than float on the target"),
    fallback_to_float: bool = typer.Option(False, "--fallback-to-float", help="if INT8 is slower than float on the target, ship the float model instead of failing"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads for the latency comparison"),
    seed: int = typer.Option(0, "--seed"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """INT8 quantization-aware distillation: PTQ, QAT against the teacher, QDQ ONNX checked against the target's rules.

    Writes OUT/model.onnx (INT8 QDQ), OUT/float.onnx and OUT/result.json (accuracy float vs PTQ vs QAD
    on the eval split, parity ORT vs fake-quant torch, latency float vs INT8, speed-guard decisions).
    Exit 1 when parity fails or INT8 is slower than float without --allow-slower.

    Example: squeeze quantize samples/teachers/resnet_mnist.pt --data mnist --target cpu --epochs 2 --out quant/ --json
    """
    from squeeze import api

    result = api.quantize(model, teacher=teacher, data=data, target=target, out=out, arch=arch, input_shape=input_shape,
                          trust_pickle=trust_pickle, progress=_progress(as_json), epochs=epochs, calib_samples=calib_samples, bits=bits,
                          lr=lr, train_samples=train_samples, loss=loss, scale_update_epochs=scale_update_epochs, backend=backend,
                          allow_slower=allow_slower, fallback_to_float=fallback_to_float, threads=threads, seed=seed)
    if as_json:
        return _emit_json({k: v for k, v in result.items() if k not in ("history", "ptq_activation_scales")})
    acc = result["accuracy"]
    fmt = lambda ev: "-" if ev["accuracy"] is None else f"{ev['accuracy'] * 100:.2f}%"  # noqa: E731
    table = Table(title=f"{model} → INT8 for {target} ({result['backend']['name']})")
    for col in ("", "float", "PTQ", "QAD", "INT8 ONNX"):
        table.add_column(col, justify="right")
    table.add_row("eval accuracy", fmt(acc["float"]), fmt(acc["ptq"]), fmt(acc["qad"]), fmt(acc["int8_onnx"]))
    table.add_row("teacher agreement", *(f"{acc[k]['teacher_agreement'] * 100:.2f}%" for k in ("float", "ptq", "qad", "int8_onnx")))
    stdout.print(table)
    parity = result["parity"]
    stdout.print(f"parity (ORT vs fake-quant torch) on {parity['inputs']}: max |diff| {parity['max_abs_diff']:.3g} "
                 f"(allowed {parity['tolerance_max_abs']:.3g}), top-1 agreement {parity['top1_agreement'] * 100:.2f}% — passed")
    lat = result["latency"]
    if lat.get("measured"):
        stdout.print(f"latency p50 on {target}: float {lat['float_p50_ms']:.3f} ms, INT8 {lat['int8_p50_ms']:.3f} ms "
                     f"({result['speedup_p50']:.2f}×; {lat['verdict']}); layers kept in float: {', '.join(lat['excluded_layers']) or 'none'}")
    else:
        stdout.print(f"latency not measured: {lat.get('reason')}")
    stdout.print(f"wrote [bold]{out}/model.onnx[/] ({result['graph']['quantize_linear']} Q / {result['graph']['dequantize_linear']} DQ, "
                 f"opset {result['graph']['opset']}) and {out}/result.json")


def _print_latency(result: dict[str, Any], title: str) -> None:
    """The latency table; a prediction is labelled as one everywhere it is shown."""
    if not result.get("measured", True):
        opts = result["options"]
        stdout.print(f"[bold yellow]PREDICTED, not measured[/] ({escape(result.get('why_predicted', ''))})")
        if opts.get("assumed"):
            stdout.print(escape(opts["assumed"]))
        table = Table(title=f"PREDICTED latency: {title}")
        for col in ("predicted ms", "kernels", "hardware", "precision", "calibration"):
            table.add_column(col, justify="right" if col in ("predicted ms", "kernels") else "left")
        cal = opts["calibration"]
        table.add_row(f"{result['p50_ms']:.3f}", str(opts["kernels"]), escape(opts["hardware"]["name"]), opts["precision"],
                      f"{cal['measurements']} stored measurement(s), x{cal['factor']:.2f}" if cal["calibrated"] else "none (raw roofline)")
        stdout.print(table)
    else:
        stdout.print(_latency_table(result, title))
    if result.get("layers"):
        key = "predicted_ms" if not result.get("measured", True) else "average_ms"
        layers = Table(title=("predicted " if key == "predicted_ms" else "") + "per-layer time, slowest first (top 10)")
        layers.add_column("layer", overflow="fold")
        layers.add_column("ms", justify="right")
        for row in result["layers"][:10]:
            layers.add_row(escape(row["name"]), f"{row[key]:.4f}")
        stdout.print(layers)
    for note in ("clock_warning", "unstable"):
        if result.get("options", {}).get(note):
            stdout.print(f"[yellow]note:[/] {escape(result['options'][note])}")
    commands = result.get("options", {}).get("on_device_commands")
    if commands:
        stdout.print("to measure for real, on the device (TensorRT 10.x / JetPack 6 flags):")
        for line in commands:
            stdout.print(f"  {escape(line)}", soft_wrap=True)


@app.command()
@handled
def build(
    model: Path = typer.Argument(..., help=".onnx file, or a torch model (exported with a parity check first)"),
    out: Path = typer.Option(..., "--out", "-o", help="engine file to write; its manifest goes to OUT.manifest.json"),
    target: str = typer.Option("tensorrt", "--target", "-t", help="tensorrt (this machine's GPU) or jetson-* / jetson (with --device)"),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="optimisation-profile batch (dynamic-batch models build 1..max(b, 32))"),
    device: Optional[str] = DeviceOpt,
    power_mode: Optional[str] = PowerOpt,
    identity_file: Optional[str] = IdentityOpt,
    known_hosts: Optional[str] = KnownHostsOpt,
    port: Optional[int] = PortOpt,
    precision: Optional[str] = PrecisionOpt,
    trtexec: Optional[str] = TrtexecOpt,
    data: Optional[str] = DataOpt,
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Build a TensorRT engine where it will run, plus a manifest (TensorRT version, GPU/SM, JetPack, power mode, precision, shapes, ONNX sha256).

    Engines only run on the TensorRT version and GPU that built them: jetson-* builds ON the device
    over SSH; tensorrt builds on this machine's GPU. Without either it says what it would run.

    Examples: squeeze build m.onnx --target jetson-orin-nano --device nvidia@jetson --out m.engine

      squeeze build m.onnx --target tensorrt --out m.engine
    """
    from squeeze import api

    result = api.build(model, out, target=target, batch_size=batch_size, data=data, arch=arch, input_shape=input_shape,
                       trust_pickle=trust_pickle, device=device, power_mode=power_mode, identity_file=identity_file,
                       known_hosts=known_hosts, port=port, precision=precision, trtexec=trtexec)
    if as_json:
        return _emit_json(result)
    power = result.get("power_mode") or {}
    stdout.print(f"wrote [bold]{result['engine']}[/] ({result['bytes'] / 1e6:.2f} MB) and {result['manifest']}")
    stdout.print(f"TensorRT {result['tensorrt_version']} on {result.get('gpu') or '?'} (SM {result.get('sm') or '?'})"
                 + (f", {result['module']}, JetPack {result.get('jetpack') or '?'}, power mode {power.get('name', '?')}" if result.get("module") else "")
                 + f"; precision {result['precision']}")


@app.command()
@handled
def search(
    teacher: Path = typer.Argument(..., help="the trained teacher"),
    data: Optional[str] = DataOpt,
    target: str = typer.Option("cpu", "--target", "-t", help="latency is measured on this target (predicted, and labelled so, where it cannot run here)"),
    space: str = typer.Option("resnet", "--space", help="resnet, mobilenetv2, or your own pkg.mod:space (a squeeze.passes.search.spaces.SearchSpace)"),
    latency_budget: Optional[str] = typer.Option(None, "--latency-budget", help="e.g. 2ms or 500us: bounds the --latency-metric of every candidate"),
    latency_metric: str = typer.Option("p50", "--latency-metric", help="p50 (default: robust on a shared machine), p90 (what compress's gate checks) or mean"),
    params_budget: Optional[str] = typer.Option(None, "--params-budget", help="e.g. 200k"),
    macs_budget: Optional[str] = typer.Option(None, "--macs-budget", help="e.g. 5M (default: the teacher's MACs)"),
    population: int = typer.Option(24, "--population", help="regularised-evolution population"),
    iterations: int = typer.Option(96, "--iterations", help="children proposed after the initial population (default 96: about 3 min on a busy 2-core machine with a latency budget, most of it measuring latency, which is cached for re-runs; 500 for a thorough search)"),
    proxy: str = typer.Option("diswot", "--proxy", help="diswot, diswot-semantic, diswot-relation, nwot, synflow, snip, grad-norm, params, macs"),
    teacher_init: str = typer.Option("trained", "--teacher-init", help="DisWOT's teacher: trained (your weights) or random (the paper's random init)"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="the one fixed proxy batch (from the calibration split)"),
    seed: int = typer.Option(0, "--seed"),
    top_k: int = typer.Option(10, "--top-k", help="rows in the top-k table"),
    profile_iterations: int = typer.Option(40, "--profile-iterations", help="timed runs per candidate (the chosen student is re-measured with 200)"),
    latency_cache: Optional[Path] = typer.Option(None, "--latency-cache", help="JSON latency cache (default ~/.cache/squeeze/latency.json)"),
    no_latency_cache: bool = typer.Option(False, "--no-latency-cache", help="measure every candidate afresh"),
    out: Path = typer.Option(Path("search-out"), "--out", "-o", help="output directory (created; its parent must exist)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search a student architecture for the teacher without training (DisWOT proxy), under latency/params/MACs budgets.

    Writes OUT/student.json (the spec `squeeze distill --student` and `squeeze compress --student`
    take), OUT/result.json (chosen student, score, params, MACs, latency, top-k, timings, config)
    and OUT/history.jsonl (every candidate evaluated). Latencies are measured on --target through
    ONNX Runtime and cached on disk; where the target cannot run here they are predicted and
    labelled so.

    Example: squeeze search samples/teachers/resnet_mnist.pt --data mnist --target cpu --space resnet --latency-budget 0.3ms --out search/
    """
    from squeeze import api

    on_event, bar = (None, None) if as_json else _search_progress(iterations)
    try:
        result = api.search(teacher, data=data, target=target, out=out, space=space, proxy=proxy, latency_budget=latency_budget,
                            latency_metric=latency_metric, params_budget=params_budget, macs_budget=macs_budget, population=population,
                            iterations=iterations, teacher_init=teacher_init, batch_size=batch_size, seed=seed, top_k=top_k, profile_iterations=profile_iterations,
                            latency_cache=str(latency_cache) if latency_cache else "", use_latency_cache=not no_latency_cache,
                            arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, progress=_progress(as_json), on_event=on_event)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        return _emit_json(result)
    st = result["student"]
    metric = result["budgets"]["latency_metric"]

    def lat_text(lat: Optional[dict]) -> str:
        if not lat:
            return "-"
        return f"{lat[metric + '_ms']:.3f} ms{'' if lat['measured'] else ' (predicted)'}"

    table = Table(title=f"top {len(result['top_k'])} by proxy {result['proxy']['name']} (higher is better)")
    for col in ("#", "score", "params", "MACs", f"latency {metric}", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right", overflow="fold")
    for row in result["top_k"]:
        table.add_row(str(row["rank"]), f"{row['score']:.4f}", _fmt_count(row["params"]), _fmt_count(row["macs"]), lat_text(row["latency"]),
                      escape(" ".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in row["spec"]["kwargs"].items())))
    stdout.print(table)
    stdout.print(f"wrote [bold]{out}/student.json[/]: {escape(json.dumps(st['spec']))}")
    stdout.print(f"student {_fmt_count(st['params'])} params, {_fmt_count(st['macs'])} MACs (teacher {_fmt_count(result['teacher']['params'])}, "
                 f"{_fmt_count(result['teacher']['macs'])}); latency {lat_text(st['latency'])} on {result['target']['name']}"
                 + (f", budget {result['budgets']['latency_ms']:g} ms" if result["budgets"]["latency_ms"] else ""))
    if result["within_budget"].get("latency_final") is False:
        stderr.print(f"[yellow]warning:[/] re-measured with {st['latency']['iterations']} runs, the student's {metric} "
                     f"({st['latency'][metric + '_ms']:.3f} ms) is over the budget; the search-time measurement "
                     f"({st['latency_search'][metric + '_ms']:.3f} ms, {result['config']['profile_iterations']} runs) was within it. "
                     "Latency on this machine is noisy: retry, tighten the budget or raise --profile-iterations", highlight=False)
    s, t = result["search"], result["timings"]
    stdout.print(f"{s['unique_candidates']} architectures evaluated ({s['feasible']} within budget) in {t['total_s']:.0f}s; "
                 f"proxy {t['proxy_seconds_per_candidate_median'] * 1000:.0f} ms per candidate; next: squeeze distill {teacher} --student {out}/student.json")


def _search_progress(iterations: int):
    """A rich progress bar on stderr with the best candidate so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]search[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                   console=stderr, transient=False)
    task = bar.add_task("initial population", total=max(1, iterations), start=False)
    evaluated = {"n": 0, "started": False}

    def on_event(event, best) -> None:
        if not evaluated["started"]:
            evaluated["started"] = True
            bar.start()  # only once candidates flow: an early input error stays one line
            bar.start_task(task)
        evaluated["n"] += not event.repeat
        text = f"evaluated {evaluated['n']}"
        if best is not None:
            lat = best.metrics.get("latency")
            text += (f" · best {best.score:.4f}, {_fmt_count(best.metrics['params'])} params"
                     + (f", {lat['p50_ms']:.3f} ms p50" if lat else ""))
        bar.update(task, completed=event.step, description=text if event.step else f"initial population · {text}")

    return on_event, bar


@app.command()
@handled
def prune(
    model: Path = typer.Argument(..., help="the float model to prune (squeeze checkpoint, or state_dict + --arch)"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="logit-KD teacher for recovery (default: the model itself, unpruned)"),
    data: Optional[str] = DataOpt,
    target: str = typer.Option("cpu", "--target", "-t", help="where latency is measured (see `squeeze targets`)"),
    latency_budget: Optional[str] = typer.Option(None, "--latency-budget", help="median latency to reach, e.g. 1ms, or 0.5x of the input's (measured in the same run)"),
    ratio: float = typer.Option(0.5, "--ratio", help="most channels removed from any layer over the run, in (0, 1)"),
    steps: int = typer.Option(4, "--steps", help="prune + recover steps (stops early once the budget is met)"),
    importance: str = typer.Option("l2", "--importance", help="channel importance: l2, taylor or bn"),
    depth: bool = typer.Option(False, "--depth", help="also remove whole identity-shaped residual blocks (lowest 1 - cos(in, out) first)"),
    layer_distill: bool = typer.Option(True, "--layer-distill/--no-layer-distill", help="per-block normalised MSE to the unpruned model during recovery"),
    teacher_forced: bool = typer.Option(False, "--teacher-forced", help="after removing a block, first train its neighbour on the pre-step model's input (PPCL)"),
    recover_epochs: float = typer.Option(1.0, "--recover-epochs", help="recovery epochs after each step (fractions allowed)"),
    final_epochs: float = typer.Option(2.0, "--final-epochs", help="recovery epochs after the last step (best picked on the calibration split)"),
    lr: float = typer.Option(0.01, "--lr", help="recovery learning rate (SGD, cosine)"),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    candidates: int = typer.Option(3, "--candidates", help="width candidates measured per step when a budget is set"),
    min_gain: float = typer.Option(0.02, "--min-gain", help="a step must be at least this much faster than the current model"),
    threads: Optional[int] = typer.Option(None, "--threads", help="profiling threads (default: the target's)"),
    exporter: str = typer.Option("dynamo", "--exporter", help="ONNX exporter for the timed graphs: dynamo (what `squeeze export` ships) or legacy (faster)"),
    latency_stat: str = typer.Option("p50", "--latency-stat", help="per-round latency statistic compared: p50, min (robust on a busy machine) or mean"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (recovery training)"),
    out: Path = typer.Option(Path("prune-out"), "--out", "-o", help="output directory (created when complete)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Structured pruning (Torch-Pruning dependency graph) chosen by latency measured on the target.

    Each step measures candidate widths (and, with --depth, removing a block) next to the current
    model and keeps one only if it is measurably faster; recovery distils logits from the teacher
    and each kept block's output from the unpruned model. Writes OUT/model.pt and OUT/result.json
    with a per-step table. Exit 1 when the budget is not met (the best model reached is still written).

    Example: squeeze prune samples/teachers/resnet_mnist.pt --data mnist --target cpu --latency-budget 0.5x --depth --out prune/
    """
    from squeeze import api

    result = api.prune(model, teacher=teacher, data=data, target=target, latency_budget=latency_budget, out=out, arch=arch,
                       input_shape=input_shape, trust_pickle=trust_pickle, progress=_progress(as_json), ratio=ratio, steps=steps,
                       importance=importance, depth=depth, layer_distill=layer_distill, teacher_forced=teacher_forced,
                       recover_epochs=recover_epochs, final_epochs=final_epochs, lr=lr, batch_size=batch_size, candidates=candidates,
                       min_gain=min_gain, profile_threads=threads, latency_stat=latency_stat, exporter=exporter, seed=seed, device=device)
    if as_json:
        _emit_json({k: v for k, v in result.items() if k != "structure"})
    else:
        fmt = lambda v: "-" if v is None else f"{v * 100:.2f}%"  # noqa: E731
        table = Table(title=f"prune on {target} (latency {result['latency']['kind']})")
        for col in ("step", "action", "kept", "params", "MACs", "MACs ratio", "latency ms", "latency ratio", "eval acc"):
            table.add_column(col, justify="left" if col in ("action", "kept") else "right")
        for row in result["steps"]:
            kept = "yes" if row["accepted"] else "[red]rejected[/]"
            if row["accepted"]:
                table.add_row(str(row["step"]), row["action"], kept, _fmt_count(row["params"]), _fmt_count(row["macs"]), f"{row['macs_ratio']:.3f}",
                              f"{row['latency_ms']:.3f}", f"{row['latency_ratio']:.3f}", fmt(row["eval_accuracy"]))
            else:
                best = next(c for c in row["candidates"] if c["action"] == row["action"])
                table.add_row(str(row["step"]), row["action"], kept, _fmt_count(best["params"]), _fmt_count(best["macs"]), "-", "-",
                              f"{best['ratio_to_current']:.3f}x cur", "-")
        stdout.print(table)
        lat, pr = result["latency"], result["pruned"]
        stdout.print(f"wrote [bold]{result['model_file']}[/] and {out}/result.json")
        stdout.print(f"input {lat['input_ms']:.3f} ms → pruned {lat['pruned_ms']:.3f} ms ({lat['ratio']:.3f}x, {lat['kind']}, interleaved); "
                     f"MACs {result['macs_ratio']:.3f}x, params {result['params_ratio']:.3f}x")
        stdout.print(f"eval accuracy: input {fmt(result['input']['eval_accuracy'])} → pruned {fmt(pr['eval_accuracy'])}"
                     + (f", removed blocks: {', '.join(pr['removed_blocks'])}" if pr["removed_blocks"] else ""))
    if result["budget_met"] is False:
        stderr.print(f"latency budget not met: reached {result['latency']['pruned_ms']:.3f} ms ({result['latency']['ratio']:.3f}x of the input), "
                     f"budget {result['budget_ms']:.3f} ms; the best model reached is in {out}")
        raise typer.Exit(1)


def _parse_pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    pairs = [tuple(part.split("=", 1)) for part in text.split(",")]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        from squeeze.errors import UserInputError

        raise UserInputError(f"--feature-pairs must look like stages.1=stages.1,stages.2=stages.2, got {text!r}")
    return tuple(pairs)  # type: ignore[arg-type]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
