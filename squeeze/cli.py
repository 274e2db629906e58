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
        "  squeeze inspect samples/teachers/resnet_mnist.pt2\n\n"
        "  squeeze export samples/teachers/resnet_mnist.pt --out m.onnx --json\n\n"
        "  squeeze profile m.onnx --target cpu --json\n\n"
        "  squeeze targets"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)
_state = {"debug": bool(os.environ.get("SQUEEZE_DEBUG"))}

# Options shared by the commands that load a model.
ArchOpt = typer.Option(None, "--arch", help="module:factory that builds the architecture of a state_dict, e.g. mypkg.models:resnet18")
ShapeOpt = typer.Option(None, "--input-shape", help="input shape with batch, e.g. 1x3x32x32 (when the file does not record it)")
TrustOpt = typer.Option(False, "--trust-pickle", help="allow loading full pickles (runs code from the file: only for files you trust)")
DataOpt = typer.Option(None, "--data", help="'mnist', 'digits', a .npz/.pt file, an image folder, or pkg.mod:fn")
JsonOpt = typer.Option(False, "--json", help="print one JSON document on stdout instead of tables")


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn squeeze errors into one stderr line + exit code; internal errors into a log pointer."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SqueezeError as exc:
            if _state["debug"]:
                traceback.print_exc()
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"]:
                traceback.print_exc()
            fd, log = tempfile.mkstemp(prefix="squeeze-error-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                fh.write(traceback.format_exc())
            stderr.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (traceback in {log}; re-run with --debug)",
                         highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


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
    as_json: bool = JsonOpt,
) -> None:
    """Measure latency on a target's runtime: p50/p90/p99/mean/std/min, CoV, providers, threads.

    Example: squeeze profile m.onnx --target cpu --json
    """
    from squeeze import api

    result = api.profile(model, target=target, batch_size=batch_size, warmup=warmup, iterations=iterations, threads=threads,
                         data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    if as_json:
        return _emit_json(result)
    stdout.print(_latency_table(result, f"{model} on {target}"))


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
        table.add_row(row["name"], "[green]yes[/]" if row["available"] else "[red]no[/]", escape(row["description"]), escape(row["reason"]))
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
    iterations: int = typer.Option(200, "--iterations", "-n", help="timed runs when profiling"),
    student: Optional[str] = typer.Option(None, "--student", help="distil this student (JSON spec or pkg.mod:factory) before export"),
    epochs: int = typer.Option(8, "--epochs", help="distillation epochs (with --student)"),
    loss: str = typer.Option("kd", "--loss", help="distillation loss (with --student), see `squeeze distill --help`"),
    label_free: bool = typer.Option(False, "--label-free", help="distil without labels (with --student)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run the pass pipeline for a target and write model.onnx + manifest.json with a gate verdict.

    Today's pipeline: [distill --student] -> export (with parity) -> profile on the target, with
    teacher and output accuracy on the eval split (and, with --student, the teacher's latency next
    to the output's). Exit 1 when a requested gate (--latency-budget, --max-accuracy-drop) fails.

    Example: squeeze compress samples/teachers/resnet_mnist.pt --target cpu --out out/ --latency-budget 5ms
    """
    from squeeze import api
    from squeeze.targets.base import ProfileSpec

    result = api.compress(model, target=target, out=out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                          latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop,
                          profile_spec=ProfileSpec(iterations=iterations), student=student,
                          distill_options={"epochs": epochs, "loss": loss, "label_free": label_free},
                          progress=_progress(as_json), command=sys.argv)
    if as_json:
        _emit_json(result)
    else:
        stdout.print(f"wrote [bold]{out}/model.onnx[/] and [bold]{out}/manifest.json[/]")
        acc = result["accuracy"]
        if acc:
            fmt = lambda v: "-" if v is None else f"{v * 100:.2f}%"  # noqa: E731
            stdout.print(f"accuracy on {acc['samples']} eval samples: teacher (torch) {fmt(acc['teacher_accuracy'])}, "
                         f"output (ONNX Runtime) {fmt(acc['output_accuracy'])}, top-1 agreement {acc['top1_agreement'] * 100:.2f}%")
        stdout.print(_latency_table(result["latency"], f"latency on {target}"))
        if result.get("teacher_latency"):
            st, tl = result["student"]["student"], result["teacher_latency"]
            stdout.print(f"teacher p50 {tl['p50_ms']:.3f} ms → output p50 {result['latency']['p50_ms']:.3f} ms "
                         f"({result['speedup_p50']:.1f}× faster); MACs {_fmt_count(result['teacher']['macs'])} → {_fmt_count(st['macs'])}, "
                         f"params {_fmt_count(result['teacher']['params'])} → {_fmt_count(st['params'])}")
        for check in result["gate"]["checks"]:
            stdout.print(f"gate {check['check']}: {check['value']:.4g} vs limit {check['limit']:.4g} — {'pass' if check['passed'] else 'FAIL'}")
        stdout.print(f"verdict: [bold]{result['gate']['verdict']}[/]")
    if result["gate"]["verdict"] != "pass":
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
    augment: str = typer.Option("none", "--augment", help="none or shift (random 2-pixel translation)"),
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
