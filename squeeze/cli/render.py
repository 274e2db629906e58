"""Human output of the commands: tables and summaries (the --json output is the result as it is)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from squeeze.cli.app import _emit_json, stderr, stdout
from squeeze.run.report import format_count


def _latency_table(stats: dict[str, Any], title: str) -> Table:
    caption = (f"batch {stats['batch_size']}, {stats['threads']} threads, {stats['iterations']} runs after {stats['warmup']} warm-up, "
               f"{stats['runtime']} {stats['runtime_version']} on {', '.join(stats['providers'])}")
    table = Table(title=title, caption=caption)
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "CoV"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{stats[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms")), f"{stats['cov'] * 100:.1f}%")
    return table



def _emit_result(result: dict[str, Any]) -> None:
    _emit_json(result)
    if result["gate"]["verdict"] != "pass":
        raise typer.Exit(1)


def _stage_table(result: dict[str, Any]) -> Table:
    """The stage table, narrowed to what fits a terminal (report.html has every column)."""
    from squeeze.run.report import describe_settings, speedup_text, stage_header, stage_rows

    tl, lat = result["teacher_latency"], result["latency"]
    header = stage_header(result)
    keep = ["stage", "accuracy", "agreement", "params", "MACs", "p50 ms", "p90 ms", *(["output NMSE"] if "output NMSE" in header else [])]
    caption = f"teacher p50 {tl['p50_ms']:.3f} ms at its fastest → output p50 {lat['p50_ms']:.3f} ms ({speedup_text(result)})"
    chosen = (lat.get("settings") or {}).get("chosen")
    if chosen:
        caption += f"\noutput at {describe_settings(chosen)} (model.session.json)"
    measurement = result.get("measurement") or {}
    if measurement.get("noisy"):
        caption += "\nNOISY HOST: " + "; ".join(measurement.get("why_noisy") or []) + " — absolute figures are inflated"
    table = Table(title=f"stages on {result['target']['name']}", caption=caption)
    for i, col in enumerate(keep):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in stage_rows(result):
        table.add_row(*(escape(row[header.index(col)]) for col in keep))
    return table


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


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


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _footer(result: dict[str, Any], out: Any) -> None:
    run = result.get("compress") or {}
    if run:
        from squeeze.run.report import speedup_text

        tl, lat = run["teacher_latency"], run["latency"]
        stdout.print(f"on {lat.get('target', '?')}: {tl['p50_ms']:.3f} ms → {lat['p50_ms']:.3f} ms p50 ({speedup_text(run, 2)}); "
                     f"manifest and report in {out}")


def distill_result(result: dict[str, Any], out: Any) -> None:
    ev = result["eval"]
    stdout.print(f"wrote [bold]{result.get('student_file', out)}[/] (best epoch {result['best_epoch']}, {result['selected_on']})")
    stdout.print(f"eval split ({ev['samples']} samples): student {_pct(ev['student_accuracy'])}, teacher {_pct(ev['teacher_accuracy'])}, "
                 f"top-1 agreement {_pct(ev['agreement'])}")
    stdout.print(f"student {format_count(result['student']['params'])} params, {format_count(result['student']['macs'])} MACs; "
                 f"teacher {format_count(result['teacher']['params'])} params, {format_count(result['teacher']['macs'])} MACs")
    _footer(result, out)


def quantize_result(result: dict[str, Any], out: Any) -> None:
    acc = result["accuracy"]
    fmt = lambda ev: _pct(ev["accuracy"])  # noqa: E731
    target = result["target"]["name"] if isinstance(result["target"], dict) else result["target"]
    table = Table(title=f"INT8 for {target} ({result['backend']['name']})")
    for col in ("", "float", "PTQ", "QAD", "INT8 ONNX"):
        table.add_column(col, justify="right")
    table.add_row("eval accuracy", fmt(acc["float"]), fmt(acc["ptq"]), fmt(acc["qad"]), fmt(acc["int8_onnx"]))
    table.add_row("teacher agreement", *(_pct(acc[k]["teacher_agreement"]) for k in ("float", "ptq", "qad", "int8_onnx")))
    if "output_nmse" in acc["float"]:  # outputs that are not class logits: how close to the teacher's
        table.add_row("output NMSE", *(f"{acc[k]['output_nmse']:.3g}" for k in ("float", "ptq", "qad", "int8_onnx")))
    stdout.print(table)
    parity = result["parity"]
    agreement = "" if parity["top1_agreement"] is None else f", top-1 agreement {parity['top1_agreement'] * 100:.2f}%"
    stdout.print(f"parity (ORT vs fake-quant torch) on {parity['inputs']}: max |diff| {parity['max_abs_diff']:.3g} "
                 f"(allowed {parity['tolerance_max_abs']:.3g}){agreement} — passed")
    lat = result["latency"]
    if lat.get("measured"):
        stdout.print(f"speed guard p50: float {lat['float_p50_ms']:.3f} ms, INT8 {lat['int8_p50_ms']:.3f} ms ({lat['verdict']}); "
                     f"layers kept in float: {', '.join(lat['excluded_layers']) or 'none'}")
    else:
        stdout.print(f"latency not measured: {lat.get('reason')}")
    if result.get("float_input_layers"):
        stdout.print(f"input layers run in float (few input channels): {', '.join(result['float_input_layers'])}")
    stdout.print(f"wrote [bold]{out}/model.onnx[/] ({result['graph']['quantize_linear']} Q / {result['graph']['dequantize_linear']} DQ, "
                 f"opset {result['graph']['opset']}), {out}/float.onnx and {out}/result.json")
    _footer(result, out)


def prune_result(result: dict[str, Any], out: Any) -> None:
    table = Table(title=f"prune on {result['target']['name']} (latency {result['latency']['kind']})")
    for col in ("step", "action", "kept", "params", "MACs", "MACs ratio", "latency ms", "latency ratio", "eval acc"):
        table.add_column(col, justify="left" if col in ("action", "kept") else "right")
    for row in result["steps"]:
        if row["accepted"]:
            table.add_row(str(row["step"]), row["action"], "yes", format_count(row["params"]), format_count(row["macs"]),
                          f"{row['macs_ratio']:.3f}", f"{row['latency_ms']:.3f}", f"{row['latency_ratio']:.3f}", _pct(row["eval_accuracy"]))
        else:
            best = next(c for c in row["candidates"] if c["action"] == row["action"])
            table.add_row(str(row["step"]), row["action"], "[red]rejected[/]", format_count(best["params"]), format_count(best["macs"]), "-", "-",
                          f"{best['ratio_to_current']:.3f}x cur", "-")
    stdout.print(table)
    lat, pr = result["latency"], result["pruned"]
    stdout.print(f"wrote [bold]{result['model_file']}[/] and {out}/result.json")
    stdout.print(f"input {lat['input_ms']:.3f} ms → pruned {lat['pruned_ms']:.3f} ms ({lat['ratio']:.3f}x, {lat['kind']}, interleaved); "
                 f"MACs {result['macs_ratio']:.3f}x, params {result['params_ratio']:.3f}x")
    stdout.print(f"eval accuracy: input {_pct(result['input']['eval_accuracy'])} → pruned {_pct(pr['eval_accuracy'])}"
                 + (f", output NMSE to the teacher {pr['output_nmse']:.3g}" if pr.get("output_nmse") is not None else "")
                 + (f", removed blocks: {', '.join(pr['removed_blocks'])}" if pr["removed_blocks"] else ""))
    _footer(result, out)


def search_result(result: dict[str, Any], out: Any) -> None:
    st = result["student"]
    metric = result["budgets"]["latency_metric"]

    def lat_text(lat: dict[str, Any] | None) -> str:
        return "-" if not lat else f"{lat[metric + '_ms']:.3f} ms{'' if lat['measured'] else ' (predicted)'}"

    shot = result.get("fewshot") or {}
    title = f"top {len(result['top_k'])} by proxy {result['proxy']['name']} (higher is better)"
    if "steps" in shot:  # the few-shot tier re-ordered the proxy's first ones
        title += f"; its first {shot['shortlist']} re-ranked by {shot['ranked_by']} ({shot['steps']} steps each)"
    table = Table(title=title)
    columns = ("#", "score", *(("few-shot acc",) if "steps" in shot else ()), "params", "MACs", f"latency {metric}", "architecture")
    for col in columns:
        table.add_column(col, justify="left" if col == "architecture" else "right", overflow="fold")
    for row in result["top_k"]:
        few = ((f"{row['fewshot']['accuracy'] * 100:.1f} %" if row.get("fewshot") else "-"),) if "steps" in shot else ()
        table.add_row(str(row["rank"]), f"{row['score']:.4g}", *few, format_count(row["params"]), format_count(row["macs"]), lat_text(row["latency"]),
                      escape(" ".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in row["spec"]["kwargs"].items())))
    stdout.print(table)
    stdout.print(f"wrote [bold]{out}/student.json[/]: {escape(json.dumps(st['spec']))}")
    stdout.print(f"student {format_count(st['params'])} params, {format_count(st['macs'])} MACs (teacher {format_count(result['teacher']['params'])}, "
                 f"{format_count(result['teacher']['macs'])}); latency {lat_text(st['latency'])} on {result['target']['name']}"
                 + (f", budget {result['budgets']['latency_ms']:g} ms" if result["budgets"]["latency_ms"] else ""))
    if result["within_budget"].get("latency_final") is False:
        stderr.print(f"[yellow]warning:[/] re-measured with {st['latency']['iterations']} runs, the student's {metric} "
                     f"({st['latency'][metric + '_ms']:.3f} ms) is over the budget; the search-time measurement was within it. "
                     "Latency on this machine is noisy: retry, tighten the budget or raise --profile-iterations", highlight=False)
    s, t = result["search"], result["timings"]
    stdout.print(f"{s['unique_candidates']} architectures evaluated ({s['feasible']} within budget) in {t['total_s']:.0f}s; "
                 f"proxy {t['proxy_seconds_per_candidate_median'] * 1000:.0f} ms per candidate"
                 + (f", few-shot tier {t['fewshot_s']:.0f}s" if "fewshot_s" in t else "") + f"; next: squeeze distill MODEL --student {out}/student.json")
