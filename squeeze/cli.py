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
