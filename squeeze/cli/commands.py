"""The commands that are not passes: inspect, export, profile, targets, compress, gate, build."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from squeeze.cli.app import (ArchOpt, DataOpt, DeviceOpt, IdentityOpt, JsonOpt, KnownHostsOpt, OutputOpt, PortOpt, PowerOpt, PrecisionOpt,
                             RemotePythonOpt, ShapeOpt, TrtexecOpt, TrustOpt, _emit_json, _progress, app, handled, stderr,
                             stdout)
from squeeze.run.report import format_count
from squeeze.cli.render import _cell, _emit_result, _print_latency, _stage_table


@app.command()
@handled
def inspect(
    model: Path = typer.Argument(..., help="model file (.pt2, TorchScript, checkpoint/state_dict, .onnx)"),
    arch: Optional[str] = ArchOpt,
    input_shape: Optional[str] = ShapeOpt,
    trust_pickle: bool = TrustOpt,
    output: Optional[str] = OutputOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Input spec, parameters, MACs and a layer summary.

    Example: squeeze inspect samples/teachers/resnet_mnist.pt2
    """
    from squeeze import api

    result = api.inspect(model, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output)
    if as_json:
        return _emit_json(result)
    spec = result["input_spec"]
    stdout.print(f"[bold]{model}[/] ({result['format']}, sha256 {result['sha256'][:12]})")
    stdout.print(f"input  {spec['name']}: {'x'.join(map(str, spec['shape']))} {spec['dtype']}"
                 f"{' (dynamic batch)' if spec['dynamic_batch'] else ''}")
    if result.get("outputs"):
        picked = ", ".join(f"{name} ({shape})" for name, shape in result["outputs"])
        stdout.print(escape(f"output {result['output']!r}: N x {'x'.join(map(str, result['output_shape']))} (of {picked})"), highlight=False)
    stdout.print(f"params {format_count(result['params'])}   MACs {format_count(result['macs'])} per sample")
    if result.get("metadata", {}).get("eval_accuracy") is not None:
        meta = result["metadata"]
        stdout.print(f"recorded accuracy {meta['eval_accuracy'] * 100:.2f}% on the eval split of {meta.get('dataset')}")
    if result.get("layers"):
        table = Table(title="layers")
        for col in ("name", "type", "output", "params", "MACs"):
            table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
        for row in result["layers"]:
            table.add_row(row["name"], row["type"], "x".join(map(str, row["output_shape"] or [])), format_count(row["params"]), format_count(row["macs"]))
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
    output: Optional[str] = OutputOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export to ONNX and check parity (torch vs ONNX Runtime) on real eval samples.

    Example: squeeze export samples/teachers/resnet_mnist.pt --out m.onnx --json
    """
    from squeeze import api

    result = api.export(model, out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                        opset=opset, exporter=exporter, dynamic_batch=not static_batch, output=output)
    if as_json:
        return _emit_json(result)
    parity = result["parity"]
    stdout.print(f"wrote [bold]{result['path']}[/] (opset {result['opset']}, {result['bytes'] / 1e6:.2f} MB, {result['exporter']} exporter)")
    agreement = "" if parity["top1_agreement"] is None else f", top-1 agreement {parity['top1_agreement']:.4f}"
    stdout.print(f"parity on {parity['inputs']}: max |diff| {parity['max_abs_diff']:.2e}{agreement} — passed")


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
    output: Optional[str] = OutputOpt,
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
                         data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output, device=device, power_mode=power_mode,
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
    latency_budget: Optional[str] = typer.Option(None, "--latency-budget", help="gate: p90 latency on the target, e.g. 5ms, or 0.125x of the teacher's (timed in the same rounds)"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="gate: accuracy drop allowed, percentage points"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="full (default: search, distill, prune, INT8 QAD, profile), quick, distill (of --student), export (no compression), or a YAML file; see --print-recipe"),
    print_recipe: bool = typer.Option(False, "--print-recipe", help="print the effective recipe as YAML and exit (no work)"),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="timed runs when profiling (default 200)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="pin ORT intra-op threads for every measurement (default: "
                                          "tuned: each model is timed at 1..cores threads, spinning on/off, with and without "
                                          "the NCHWc layout, and ships at its fastest; model.session.json records it)"),
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
    output: Optional[str] = OutputOpt,
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

    distill = {k: v for k, v in {"epochs": epochs, "loss": loss, "label_free": label_free}.items() if v is not None}
    overrides = {"distill": distill} if distill else {}
    if print_recipe:
        sys.stdout.write(api.print_recipe(recipe, student=student is not None, overrides=overrides, latency_budget=latency_budget))
        return
    import contextlib

    from squeeze.run.compress import effective_recipe
    from squeeze.run.progress import PipelineProgress

    progress: Any = _progress(True) if as_json else PipelineProgress(stderr, effective_recipe(recipe, student=student is not None).names())
    with contextlib.nullcontext() if as_json else progress:
        result = api.compress(model, target=target, out=out, data=data, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle, output=output,
                              latency_budget=latency_budget, max_accuracy_drop=max_accuracy_drop,
                              profile_spec=_profile_spec(iterations, threads), student=student,
                              recipe=recipe, overrides=overrides, resume=resume, cache_dir=cache_dir, progress=progress, command=sys.argv,
                              device=device, power_mode=power_mode, identity_file=identity_file, known_hosts=known_hosts, port=port,
                              remote_python=remote_python)
    if as_json:
        return _emit_result(result)
    stdout.print(f"wrote [bold]{out}/model.onnx[/], manifest.json and report.html")
    stdout.print(_stage_table(result))
    if (result.get("measurement") or {}).get("noisy"):
        stderr.print("[yellow]warning:[/] the latency was measured on a noisy host (" + escape("; ".join(result["measurement"]["why_noisy"])) +
                     "); ratios hold better than absolute figures: re-run on a quiet machine before trusting a budget", highlight=False)
    if result.get("precision"):
        stdout.print(escape(f"precision: '{result['precision']['shipped']}' shipped: {result['precision']['why']}"))
    for check in result["gate"]["checks"]:
        stdout.print(f"gate {check['check']}: {check['value']:.4g} vs limit {check['limit']:.4g} — {'pass' if check['passed'] else 'FAIL'}")
    stdout.print(f"verdict: [bold]{result['gate']['verdict']}[/]")
    if result["gate"]["verdict"] != "pass":
        raise typer.Exit(1)



def _profile_spec(iterations: int | None, threads: int | None) -> Any:
    from squeeze.targets.base import ProfileSpec

    given = {k: v for k, v in {"iterations": iterations, "threads": threads}.items() if v is not None}
    return ProfileSpec(**given) if given else None


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
    output: Optional[str] = OutputOpt,
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
                       trust_pickle=trust_pickle, output=output, device=device, power_mode=power_mode, identity_file=identity_file,
                       known_hosts=known_hosts, port=port, precision=precision, trtexec=trtexec)
    if as_json:
        return _emit_json(result)
    power = result.get("power_mode") or {}
    stdout.print(f"wrote [bold]{result['engine']}[/] ({result['bytes'] / 1e6:.2f} MB) and {result['manifest']}")
    stdout.print(f"TensorRT {result['tensorrt_version']} on {result.get('gpu') or '?'} (SM {result.get('sm') or '?'})"
                 + (f", {result['module']}, JetPack {result.get('jetpack') or '?'}, power mode {power.get('name', '?')}" if result.get("module") else "")
                 + f"; precision {result['precision']}")


