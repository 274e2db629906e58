"""The compress report: self-contained HTML with the plot and tables, Markdown twin, and a real render."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from squeeze import api
from squeeze.run.report import render_html, render_markdown
from squeeze.targets.base import ProfileSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    api.compress(ROOT / "samples" / "teachers" / "resnet_digits.pt", out=out, recipe="distill", student=str(ROOT / "samples" / "students" / "tiny_cnn16.json"),
                 distill_options={"epochs": 1}, profile_spec=ProfileSpec(warmup=2, iterations=20), latency_budget="50ms",
                 max_accuracy_drop=90)
    return out


def test_html_is_self_contained_and_shows_every_section(run_dir):
    page = (run_dir / "report.html").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1 and "</svg>" in page
    assert "src=\"http" not in page and "href=\"http" not in page  # nothing fetched when opened offline
    for title in ("Accuracy vs latency", "Gate", "Stages", "Per-layer latency (final", "Per-layer latency (teacher", "Passes", "Environment"):
        assert f"<h2>{title}" in page
    for label in ("teacher", "distilled", "final (deployed ONNX)"):
        assert f"<td>{label}</td>" in page
    assert f"{100 * manifest['accuracy']['output_accuracy']:.2f}%" in page
    assert "budget 50 ms" in page  # the budget line's legend, inside the SVG
    assert render_html(manifest) == page  # re-rendering from the manifest alone gives the same page


def test_markdown_mirrors_the_tables(run_dir):
    md = (run_dir / "report.md").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert md == render_markdown(manifest)
    assert md.startswith(f"# squeeze report: {manifest['gate']['verdict'].upper()}")
    stage_lines = [line for line in md.splitlines() if line.startswith("| teacher") or line.startswith("| distilled")
                   or line.startswith("| final")]
    assert len(stage_lines) == 3
    assert "| latency_p90_ms |" in md and "| accuracy_drop_pct_points |" in md


@pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="needs Pillow")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "bench" / "report_screenshot.py")
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    if shot.find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); bench/report_screenshot.py does the same by hand")
    from PIL import Image

    png = shot.screenshot(run_dir / "report.html", tmp_path / "report.png", width=1000, height=1400)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert pixels.shape == (1400, 1000)
    assert pixels.std() > 20  # text, tables and the plot, not a blank page
    assert (pixels < 100).mean() > 0.01  # dark ink: the page actually drew content
    # readable layout at 1000 px: nothing sticks out past the window, no plot label drawn over another
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["search"] = {"proxy": {"name": "diswot"}, "candidates": [{"score": -1.2 - i / 10, "latency_ms": 0.05 + i / 50} for i in range(8)],
                          "chosen": {"score": -1.2, "latency_ms": 0.05}}
    page = tmp_path / "with-search.html"
    page.write_text(render_html(manifest))
    for html in (run_dir / "report.html", page):
        layout = shot.layout_check(html, width=1000)
        assert layout["scroll_width"] <= 1000 and layout["overflowing"] == [], layout
        assert layout["labels"] >= 8 and layout["overlapping_labels"] == [], layout


def test_search_and_layer_sections_read_as_a_user_needs(run_dir):
    from squeeze.run.report import pareto_svg

    manifest = json.loads((run_dir / "manifest.json").read_text())
    untrained = {**manifest["stages"][1], "stage": "search", "accuracy": 0.1}
    manifest["stages"] = [manifest["stages"][0], untrained, *manifest["stages"][1:]]
    spec = {"arch": "squeeze.passes.search.spaces:build_resnet", "kwargs": {"stem_width": 8, "widths": [16, 32]}}
    manifest["search"] = {"proxy": {"name": "diswot", "higher_is_better": True}, "search": {"unique_candidates": 40},
                          "top_k": [{"rank": 1, "spec": spec, "score": -1.25, "params": 5000, "macs": 2e6, "latency": {"p50_ms": 0.05}}],
                          "candidates": [{"score": -1.25 - i / 10, "latency_ms": 0.05 + i / 100} for i in range(6)],
                          "chosen": {"score": -1.25, "latency_ms": 0.05}}
    md = render_markdown(manifest)
    assert '"stem_width": 8' in md and "squeeze.passes.search.spaces" not in md.split("## Student search")[1].split("##")[0]
    assert "proxy diswot (higher is better), 40 candidates scored" in md and "{'name'" not in md
    # the default search's few-shot tier: its short-run accuracy per shortlisted candidate, and what re-ranked them
    manifest["search"]["top_k"][0]["fewshot"] = {"accuracy": 0.912, "sotl": 0.4, "seconds": 1.0}
    manifest["search"]["fewshot"] = {"shortlist": 8, "steps": 50, "ranked_by": "calibration accuracy after the short distillation"}
    shot = render_markdown(manifest).split("## Student search")[1].split("##")[0]
    assert "few-shot acc" in shot and "91.2%" in shot and "re-ranked by calibration accuracy after the short distillation after 50 steps" in shot
    layers = manifest["layer_latency"]["final"]
    scaled = layers[0]["share"] * 1e3 * manifest["latency"]["p50_ms"]
    assert f"| {100 * layers[0]['share']:.1f}% | {scaled:.1f} |" in md  # shares scaled to the measured p50
    svg = pareto_svg(manifest)
    assert "student search" in svg and "searched student (untrained)" not in svg  # chance accuracy is not plotted
    assert "10^" not in svg and "times10" not in svg  # plain millisecond tick labels
