"""The compress report: one self-contained HTML page (plots inlined as SVG) and the same in Markdown.

Written from the manifest alone, so `squeeze report build/manifest.json` can re-render it later.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from squeeze.io.fsutil import write_bytes_atomic

STAGE_LABELS = {"teacher": "teacher", "search": "searched student (untrained)", "distill": "distilled", "prune": "pruned",
                "quantize": "quantized (INT8)", "final": "final (deployed ONNX)"}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def format_count(n: float | None) -> str:
    """1.23M-style counts (params, MACs) for tables; '-' when unknown."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    if not stats or stats.get(key) is None:
        return "-"
    return f"{stats[key]:.3f}" + ("" if stats.get("measured", True) else " (predicted)")


def _has_fidelity(manifest: dict[str, Any]) -> bool:
    return any("output_nmse" in s for s in manifest.get("stages", []))


def stage_header(manifest: dict[str, Any]) -> list[str]:
    """The stage table's columns: an output-NMSE column for models that are compared to the teacher's outputs."""
    return STAGE_HEADER + (["output NMSE"] if _has_fidelity(manifest) else [])


def stage_rows(manifest: dict[str, Any]) -> list[list[str]]:
    rows = []
    fidelity = _has_fidelity(manifest)
    for s in manifest.get("stages", []):
        lat = s.get("latency") or {}
        parity = s.get("parity") or {}
        rows.append([
            STAGE_LABELS.get(s["stage"], s["stage"]) + (f" — {s['note']}" if s.get("note") else ""),
            _pct(s.get("accuracy")),
            _pct(s.get("teacher_agreement")),
            format_count(s.get("params")),
            format_count(s.get("macs")),
            f"{s['onnx_bytes'] / 1e6:.3f}" if s.get("onnx_bytes") else "-",
            _ms(lat, "p50_ms"), _ms(lat, "p90_ms"), _ms(lat, "p99_ms"),
            "-" if not parity else (f"{parity.get('max_abs_diff', 0):.1e} " + ("ok" if parity.get("passed") else "FAIL")),
            "-" if s.get("seconds") is None else f"{s['seconds']:.1f}" + (" (cached)" if s.get("cached") else ""),
            *([f"{s['output_nmse']:.3g}" if s.get("output_nmse") is not None else "-"] if fidelity else []),
        ])
    return rows


STAGE_HEADER = ["stage", "accuracy", "agreement", "params", "MACs", "ONNX MB", "p50 ms", "p90 ms", "p99 ms", "parity", "pass s"]


def pareto_svg(manifest: dict[str, Any]) -> str:
    """Accuracy vs latency of each pipeline stage (teacher starred, budget dashed) and, beside it,
    the searched candidates' proxy score vs latency (the student search has no accuracy to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = manifest.get("search") or {}
    candidates = search.get("candidates") or search.get("history") or []
    has_search = bool(candidates) and any(c.get("latency_ms") is not None for c in candidates if isinstance(c, dict))
    fig, axes = plt.subplots(1, 2 if has_search else 1, figsize=(11 if has_search else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    budget = (manifest.get("budget") or {}).get("latency_ms")
    # the searched student is untrained (chance accuracy): plotted, it squashes the trained stages into one line
    points = [(s["stage"], s["latency"]["p50_ms"], 100 * s["accuracy"]) for s in manifest.get("stages", [])
              if s.get("latency") and s.get("accuracy") is not None and s["stage"] != "search"]
    if points:
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        ax.plot(xs[1:], ys[1:], "-", color="#9ab", zorder=1)
        for i, (name, x, y) in enumerate(points):
            style = {"marker": "*", "s": 220, "color": "#d62728"} if name == "teacher" else {"marker": "o", "s": 60, "color": "#1f77b4"}
            ax.scatter([x], [y], zorder=3, **style)
            ax.annotate(STAGE_LABELS.get(name, name), (x, y), textcoords="offset points", xytext=(6, 8 if i % 2 else -14), fontsize=8)
        ax.set_xscale("log")
        _plain_ms_ticks(ax)
        spread = max(ys) - min(ys)
        ax.set_ylim(min(ys) - max(0.3, 0.25 * spread), min(100.0, max(ys) + max(0.3, 0.25 * spread)))
    if budget:
        ax.axvline(budget, linestyle="--", color="#2ca02c", label=f"budget {budget:g} ms")
        ax.legend(loc="lower right", fontsize=8)
    predicted = any(not (s.get("latency") or {}).get("measured", True) for s in manifest.get("stages", []))
    ax.set_xlabel(f"latency p50 on {manifest['target']['name']} (ms{', predicted' if predicted else ''}, log)")
    ax.set_ylabel("accuracy on the eval split (%)")
    ax.set_title("pipeline stages: accuracy vs latency")
    ax.grid(True, alpha=0.3)
    if has_search:
        ax2 = axes[0][1]
        rows = [c for c in candidates if isinstance(c, dict) and c.get("latency_ms") is not None and c.get("score") is not None]
        ax2.scatter([c["latency_ms"] for c in rows], [c["score"] for c in rows], s=14, alpha=0.6, color="#7f7f7f", label="candidates")
        chosen = search.get("chosen") or {}
        if chosen.get("latency_ms") is not None and chosen.get("score") is not None:
            ax2.scatter([chosen["latency_ms"]], [chosen["score"]], marker="D", s=70, color="#1f77b4", label="chosen")
        if budget:
            ax2.axvline(budget, linestyle="--", color="#2ca02c")
        ax2.set_xscale("log")
        _plain_ms_ticks(ax2)
        ax2.set_xlabel("candidate latency (ms, log)")
        ax2.set_ylabel(f"proxy score ({_proxy_name(search)})")
        ax2.set_title("student search")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    # stable element ids (same manifest, same page); labels as <text>, drawn by the browser (and checkable for overlap)
    with matplotlib.rc_context({"svg.hashsalt": "squeeze", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog: the SVG is inlined into HTML


def _plain_ms_ticks(ax: Any) -> None:
    """Log-axis ticks as plain milliseconds (0.1, 0.3, 1), no overlapping 3x10^0-style minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _proxy_name(search: dict[str, Any]) -> str:
    proxy = search.get("proxy")
    return str(proxy.get("name", "proxy")) if isinstance(proxy, dict) else str(proxy or "proxy")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sections(manifest: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for every table the report shows, shared by HTML and Markdown."""
    out = []
    gate = manifest.get("gate") or {}
    out.append(("Gate", ["check", "value", "limit", "result"],
                [[c["check"], f"{c['value']:.4g}", f"{c['limit']:.4g}", "pass" if c["passed"] else "FAIL"] for c in gate.get("checks", [])],
                f"verdict: {gate.get('verdict', '-')}"))
    out.append(("Stages", stage_header(manifest), stage_rows(manifest),
                "Every stage is measured the same way: accuracy and top-1 agreement with the teacher on the eval split, "
                "ONNX size, latency on the target's runtime." + (" The output is not class logits: output NMSE is the squared "
                "error to the teacher's outputs over their mean square; accuracy and agreement are per pixel for class maps "
                "(with per-pixel labels)." if _has_fidelity(manifest) else "")))
    distillation = manifest.get("distillation") or {}
    if distillation:
        out.append(("Distillation", ["pass", "objective", "loss terms (mean per batch)"], distillation_rows(distillation),
                    "each term as computed, before its weight: prune's final recovery, QAT's last epoch ('loss': the weighted sum)"))
    search = manifest.get("search") or {}
    top = search.get("top_k") or []
    if top:
        shot = search.get("fewshot") if isinstance(search.get("fewshot"), dict) and "steps" in search["fewshot"] else None
        rows = [[str(row.get("rank", i + 1)), f"{row['score']:.4g}" if row.get("score") is not None else "-",
                 *((f"{100 * row['fewshot']['accuracy']:.1f}%" if row.get("fewshot") else "-",) if shot else ()),
                 _ms(row.get("latency"), "p50_ms"), format_count(row.get("params")), format_count(row.get("macs")), _architecture(row.get("spec"))]
                for i, row in enumerate(top)]
        scored = (search.get("search") or {}).get("unique_candidates", len(top))
        note = f"proxy {_proxy_name(search)} (higher is better), {scored} candidates scored"
        if shot:
            note += f"; the first {shot['shortlist']} re-ranked by {shot['ranked_by']} after {shot['steps']} steps each"
        out.append(("Student search: top candidates", ["rank", "score", *(("few-shot acc",) if shot else ()), "p50 ms", "params", "MACs",
                                                       "architecture"], rows, note))
    for which, latency in (("final", manifest.get("latency")), ("teacher", manifest.get("teacher_latency"))):
        layers = (manifest.get("layer_latency") or {}).get(which) or []
        if layers:
            p50_us = 1e3 * (latency or {}).get("p50_ms", 0.0)
            rows = [[l["name"], l["op_type"], f"{100 * l['share']:.1f}%", f"{l['share'] * p50_us:.1f}", f"{l['mean_us']:.1f}"] for l in layers[:15]]
            out.append((f"Per-layer latency ({which}, top 15)", ["node", "op", "share", "µs of p50", "profiled µs"], rows,
                        "shares from the runtime's node profiler at the settings the model was timed at; 'µs of p50' scales them to "
                        "the measured p50 (the profiler's own overhead inflates 'profiled µs'); names are the runtime's after its "
                        "graph optimisations" + (" (e.g. *_nchwc: ORT's NCHWc layout)" if (latency or {}).get("runtime") == "onnxruntime" else "")))
    final_latency = manifest.get("latency") or {}
    if (final_latency.get("settings") or {}).get("candidates"):
        out.append(("Session tuning (deployed model)", ["settings", f"{final_latency['settings']['statistic'].removesuffix('_ms')} ms",
                                                        "vs chosen"], tuning_rows(final_latency),
                    "every candidate timed in the same interleaved rounds; the fastest ships and model.session.json records it"))
    precision = manifest.get("precision")
    if precision:
        rows = [[name, *(_ms(fig, k) for k in ("p50_ms", "p90_ms", "p99_ms"))] for name, fig in precision["candidates"].items()]
        out.append(("Precision: INT8 or float", ["candidate", "p50 ms", "p90 ms", "p99 ms"], rows, precision["why"]))
    pre = manifest.get("preprocessing")
    if pre:
        norm = pre.get("normalization") or {}
        rows = [["input", f"{pre['input']} {pre['dtype']} {'x'.join(map(str, pre['shape']))} ({pre['layout']}"
                 f"{', dynamic batch' if pre.get('dynamic_batch') else ''})"]]
        if norm:
            rows += [["channels", str(pre.get("channel_order"))], ["mean", ", ".join(f"{v:g}" for v in norm["mean"])],
                     ["std", ", ".join(f"{v:g}" for v in norm["std"])]]
        rows.append(["formula", pre["formula"]])
        out.append(("Deploying: input pre-processing", ["what", "value"], rows,
                    "applied identically in training, in the ONNX parity check and here"))
    passes = manifest.get("passes") or []
    out.append(("Passes", ["pass", "seconds", "cached", "config"],
                [[p["name"], f"{p['seconds']:.1f}", "yes" if p.get("cached") else "no", _short_config(p.get("config"))] for p in passes], ""))
    return out


def distillation_rows(distillation: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in distillation.items():
        last = d.get("final_recovery") if "final_recovery" in d else (d.get("epochs") or [{}])[-1]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in (last or {}).items() if k != "epoch" and isinstance(v, (int, float)))
        rows.append([name, str(d.get("objective", "-")), terms or "-"])
    return rows


def _architecture(spec: Any) -> str:
    """A student spec as its architecture's arguments (the factory path is the same for every row)."""
    import json

    kwargs = spec.get("kwargs", spec) if isinstance(spec, dict) else spec
    return json.dumps(kwargs, separators=(", ", ": "))[:160]


def _short_config(cfg: Any, limit: int = 100) -> str:
    import json

    text = json.dumps(cfg, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headline(manifest: dict[str, Any]) -> list[str]:
    acc = manifest.get("accuracy") or {}
    lat, tlat = manifest.get("latency") or {}, manifest.get("teacher_latency") or {}
    lines = [f"target {manifest['target']['name']}: {manifest['target'].get('description', '')}"]
    if acc.get("teacher_accuracy") is not None:
        drop = 100 * (acc["teacher_accuracy"] - acc["output_accuracy"])
        metric, agree = acc.get("metric", "accuracy"), "pixel agreement" if acc.get("metric") else "top-1 agreement"
        lines.append(f"{metric} {_pct(acc['output_accuracy'])} vs teacher {_pct(acc['teacher_accuracy'])} "
                     f"(drop {drop:.2f} pt), {agree} {_pct(acc.get('top1_agreement'))} on {acc.get('samples')} eval samples")
    lines += _output_lines(manifest)
    measurement = manifest.get("measurement") or {}
    noisy = " (noisy host: absolute figures are inflated)" if measurement.get("noisy") else ""
    if lat and tlat:
        lines.append(f"latency p50 {_ms(lat, 'p50_ms')} ms vs teacher {_ms(tlat, 'p50_ms')} ms at its fastest "
                     f"({speedup_text(manifest)}); p90 {_ms(lat, 'p90_ms')} ms{noisy}")
    if measurement.get("noisy"):
        lines.append("WARNING: measured on a noisy host (" + "; ".join(measurement.get("why_noisy") or []) +
                     "): the ratios are paired round by round and hold better than the absolute figures; re-run on a quiet machine")
    chosen = (lat.get("settings") or {}).get("chosen")
    if chosen:
        lines.append(f"runtime settings: {describe_settings(chosen)} (fastest of {len(lat['settings']['candidates'])} measured; "
                     "model.session.json)")
    precision = manifest.get("precision")
    if precision:
        lines.append(f"precision: '{precision['shipped']}' shipped: {precision['why']}")
    budget = manifest.get("budget") or {}
    if budget.get("ratio") is not None:
        lines.append(f"latency budget {budget['ratio']:g}× the teacher's p90 in the same rounds (passes aimed at {budget['latency_ms']:g} ms)")
    elif budget.get("latency_ms") is not None:
        lines.append(f"latency budget {budget['latency_ms']:g} ms (p90)")
    return lines


def _output_lines(manifest: dict[str, Any]) -> list[str]:
    """What was dropped for a model without class logits, and how close the output stayed to the teacher's."""
    lines = []
    output, fidelity = manifest.get("output") or {}, manifest.get("fidelity") or {}
    if output.get("selected") is not None:
        lines.append(f"output {output['selected']!r} of " + ", ".join(f"{o['name']} ({o['shape']})" for o in output.get("of") or []))
    reasons: dict[str, list[str]] = {}
    for d in manifest.get("dropped") or []:
        reasons.setdefault(d["why"], []).append(d["pass"])
    lines += [f"dropped {', '.join(names)}: {why}" for why, names in reasons.items()]
    if fidelity:
        extra = [f"{label} {_pct(fidelity[k])}" for k, label in (("pixel_agreement", "pixel agreement"), ("pixel_accuracy", "pixel accuracy"))
                 if fidelity.get(k) is not None]
        if fidelity.get("teacher_pixel_accuracy") is not None:
            extra.append(f"teacher {_pct(fidelity['teacher_pixel_accuracy'])}")
        if fidelity.get("target_mae") is not None:
            extra.append(f"mean |error| to the targets {fidelity['target_mae']:.4g} (teacher {fidelity.get('teacher_target_mae', 0):.4g})")
        lines.append(f"output NMSE {fidelity['output_nmse']:.4g} against the teacher's outputs on {fidelity.get('samples')} eval samples"
                     + (f" ({', '.join(extra)})" if extra else ""))
    return lines


def speedup_text(record: dict[str, Any], digits: int = 1) -> str:
    """'21.9× faster, 95% CI 21.5–22.3×, than the teacher at the same settings (1 thread: 1.182 ms p50); 12.4× vs
    the teacher at its fastest' from a manifest (or a compress summary) carrying the speed-up fields."""
    ci = record.get("speedup_ci95")
    text = f"{record.get('speedup_p50', 0):.{digits}f}× faster" + (f", 95% CI {ci[0]:.{digits}f}–{ci[1]:.{digits}f}×" if ci else "")
    basis, tuned = record.get("speedup_basis"), record.get("speedup_tuned_p50")
    if basis:
        teacher_ms = f": {basis['teacher_p50_ms']:.3f} ms p50" if "teacher_p50_ms" in basis else ""
        text += f", than the teacher at the same settings ({describe_settings(basis['teacher_settings'])}{teacher_ms})"
        if tuned and abs(tuned / record["speedup_p50"] - 1) > 0.03:
            text += f"; {tuned:.{digits}f}× vs the teacher at its own fastest settings"
    return text


def describe_settings(settings: dict[str, Any]) -> str:
    """'2 threads, spinning off, graph optimisation extended' from an ORT settings record; another runtime's
    options as they are named ('1 thread, ENABLE_CPU_PINNING False, NUM_STREAMS 1' for OpenVINO)."""
    spinning = settings.get("spinning")
    parts = [f"{settings.get('threads') or 'all'} thread{'s' if settings.get('threads') != 1 else ''}"]
    if spinning is not None:
        parts.append(f"spinning {'on' if spinning else 'off'}")
    if "optimization" in settings:
        parts.append(f"graph optimisation {settings['optimization']}")
    parts += [f"{k} {v}" for k, v in settings.items() if k not in ("threads", "spinning", "optimization") and not k.endswith("_ms")
              and k != "vs_chosen"]
    return ", ".join(parts)


def tuning_rows(latency: dict[str, Any]) -> list[list[str]]:
    """Session tuning's candidates for one model: settings, figure, ratio to the chosen one."""
    record = latency.get("settings") or {}
    key = record.get("statistic", "p50_ms")
    return [[describe_settings(c), f"{c[key]:.3f}", "-" if c.get("vs_chosen") is None else f"{c['vs_chosen']:.3f}"]
            for c in sorted(record.get("candidates") or [], key=lambda c: c[key])]


def deploy_snippet(manifest: dict[str, Any]) -> str | None:
    return (manifest.get("deploy") or {}).get("snippet")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.verdict{display:inline-block;padding:.2rem .8rem;border-radius:.4rem;color:#fff;font-weight:600}
.pass{background:#2ca02c}.fail{background:#d62728}table{border-collapse:collapse;margin:.6rem 0 1.4rem;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}.note{color:#666;font-size:.85rem}svg{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 .2rem}
pre{background:#f3f3f3;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}td{max-width:36rem;overflow-wrap:anywhere}"""


def render_html(manifest: dict[str, Any]) -> str:
    verdict = (manifest.get("gate") or {}).get("verdict", "-")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>squeeze report</title><style>{CSS}</style></head><body>",
             f"<h1>squeeze report <span class='verdict {html.escape(verdict)}'>{html.escape(verdict.upper())}</span></h1>",
             f"<p class='note'>{html.escape(manifest['teacher']['source'])} → model.onnx · {html.escape(manifest.get('finished_utc', ''))}"
             f" · squeeze {html.escape(manifest.get('squeeze_version', ''))}</p><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in _headline(manifest)]
    parts.append("</ul><h2>Accuracy vs latency</h2>")
    parts.append(pareto_svg(manifest))
    for title, header, rows, note in sections(manifest):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        parts.append(_html_table(header, rows))
    snippet = deploy_snippet(manifest)
    if snippet:
        parts.append("<h2>Deploying: runtime settings</h2><p class='note'>the settings the model was measured and gated at "
                     "(also in model.session.json)</p><pre><code>" + html.escape(snippet) + "</code></pre>")
    versions = manifest.get("versions") or {}
    parts.append("<h2>Environment</h2><p class='note'>" + html.escape(", ".join(f"{k} {v}" for k, v in versions.items())) + "</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(manifest: dict[str, Any]) -> str:
    verdict = (manifest.get("gate") or {}).get("verdict", "-")
    lines = [f"# squeeze report: {verdict.upper()}", "", *[f"- {line}" for line in _headline(manifest)], "",
             "The accuracy-vs-latency plot is in report.html.", ""]
    for title, header, rows, note in sections(manifest):
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += [_md_table(header, rows), ""]
    snippet = deploy_snippet(manifest)
    if snippet:
        lines += ["## Deploying: runtime settings", "", "the settings the model was measured and gated at (also in model.session.json)",
                  "", "```python", snippet.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write_reports(manifest: dict[str, Any], directory: Path) -> None:
    write_bytes_atomic(Path(directory) / "report.html", render_html(manifest).encode())
    write_bytes_atomic(Path(directory) / "report.md", render_markdown(manifest).encode())
