"""Does the speed-up compress prints survive a busy host, and does the shipped model run fastest at the settings
it was shipped with? Two checks of issue 16 on one compress output directory, in one run.

    nice -n 5 .venv/bin/python bench/loaded_speedup.py --compress-out out/compare_s23/.../compress-out [--pairs 2]

1. Quiet vs loaded. compress's closing measurement (squeeze.run.stages.closing_config: interleaved rounds of
   teacher.onnx and the shipped model.onnx, session tuning, stop when the ratio's interval is tight or at the
   time cap) is run in phases quiet, loaded, quiet, loaded ...; a loaded phase has a neighbour process burning
   one core (a Python busy loop started by this script, killed after the phase). Each phase prints the teacher's
   and the student's p90, the speed-up compress prints (p50, the teacher at the student's runtime settings) with
   its bootstrap 95 % interval, the speed-up against the teacher at its own fastest settings ('tuned'), the host
   load the measurer recorded and whether it flagged the run noisy. The verdict: the median loaded speed-up within
   15 % of the median quiet one.
2. Settings audit. The shipped model alone, every runtime setting the target offers (tune "full"), timed again
   in fresh interleaved rounds (quiet); the settings recorded in the manifest must be within 3 % (at p90, the
   gated statistic) of the fastest candidate of this re-measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from squeeze.io.modelio import load_onnx  # noqa: E402
from squeeze.measure.latency import compare  # noqa: E402
from squeeze.run.report import describe_settings  # noqa: E402
from squeeze.run.stages import closing_config  # noqa: E402
from squeeze.targets import get_target  # noqa: E402
from squeeze.targets.base import ProfileSpec  # noqa: E402

LOADED_TOLERANCE = 0.15
SETTINGS_TOLERANCE = 0.03


def burner() -> subprocess.Popen:
    """A neighbour that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def phase(target, arts: dict, cfg, loaded: bool) -> dict:
    neighbour = burner() if loaded else None
    try:
        if neighbour is not None:
            time.sleep(1.0)  # let the neighbour reach full speed
        result = compare(target, arts, cfg, reference="teacher")
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    printed = result.speedup("student")  # what compress prints: the teacher at the student's settings, and at its own fastest
    return {"loaded": loaded, "teacher_p90": result.stats["teacher"]["p90_ms"], "student_p90": result.stats["student"]["p90_ms"],
            "speedup": printed["speedup_p50"], "ci": printed["speedup_ci95"] or [float("nan")] * 2,
            "tuned": printed["speedup_tuned_p50"], "rounds": result.rounds, "load": result.load or {}, "noisy": result.noisy,
            "why": result.why_noisy}


def quiet_vs_loaded(target, run: Path, pairs: int) -> dict:
    arts = {"teacher": load_onnx(run / "teacher.onnx"), "student": load_onnx(run / "model.onnx")}
    cfg = closing_config(ProfileSpec())
    rows = [phase(target, arts, cfg, loaded=bool(i % 2)) for i in range(2 * pairs)]
    print(f"{'phase':7s} {'teacher p90':>11s} {'student p90':>11s} {'speed-up p50':>12s} {'95% CI':>13s} {'tuned':>6s} {'rounds':>6s} "
          f"{'others busy':>11s} {'load avg':>8s}  noisy")
    for r in rows:
        print(f"{'loaded' if r['loaded'] else 'quiet':7s} {r['teacher_p90']:11.3f} {r['student_p90']:11.3f} {r['speedup']:11.1f}x "
              f"{r['ci'][0]:6.1f}-{r['ci'][1]:<6.1f} {r['tuned']:5.1f}x {r['rounds']:6d} {r['load'].get('others_busy_share', 0) * 100:10.0f}% "
              f"{r['load'].get('load_average', 0):8.2f}  {'yes: ' + '; '.join(r['why']) if r['noisy'] else 'no'}")
    quiet = float(np.median([r["speedup"] for r in rows if not r["loaded"]]))
    loaded = float(np.median([r["speedup"] for r in rows if r["loaded"]]))
    change = loaded / quiet - 1.0
    verdict = "PASS" if abs(change) <= LOADED_TOLERANCE else "FAIL"
    print(f"speed-up quiet {quiet:.1f}x, loaded {loaded:.1f}x: {change * 100:+.1f}% ({verdict}: within {LOADED_TOLERANCE * 100:.0f}%)")
    return {"quiet": quiet, "loaded": loaded, "change": change, "passed": verdict == "PASS",
            "quiet_phases_noisy": [r["noisy"] for r in rows if not r["loaded"]]}


def settings_audit(target, run: Path, manifest: dict) -> dict:
    recorded = ((manifest.get("latency") or {}).get("settings") or {}).get("chosen")
    if not recorded:
        print("settings audit: the manifest records no tuned settings (tuning was off or the target has none)")
        return {"passed": None, "why": "no tuned settings recorded"}
    cfg = replace(closing_config(ProfileSpec()), min_rounds=7)
    result = compare(target, {"shipped": load_onnx(run / "model.onnx")}, cfg)
    record = result.settings["shipped"]
    key = record["statistic"]
    candidates = sorted(record["candidates"], key=lambda c: c[key])
    same = [c for c in candidates if {k: c.get(k) for k in recorded} == recorded]
    print(f"settings audit ({len(candidates)} candidates, {result.rounds} rounds, {key}):")
    for c in candidates:
        mark = "  <- recorded in the manifest" if c in same else ""
        print(f"  {describe_settings(c):55s} {c[key]:.4f} ms{mark}")
    if not same:
        print("  the recorded settings are not among this target's candidates now")
        return {"passed": False, "why": "recorded settings not among the candidates"}
    slower = same[0][key] / candidates[0][key] - 1.0
    verdict = "PASS" if slower <= SETTINGS_TOLERANCE else "FAIL"
    print(f"recorded settings vs the fastest candidate: {slower * 100:+.1f}% ({verdict}: at most {SETTINGS_TOLERANCE * 100:.0f}% slower)")
    return {"passed": verdict == "PASS", "slower": slower, "candidates": len(candidates), "recorded": recorded}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compress-out", type=Path, required=True, help="a squeeze compress output directory")
    parser.add_argument("--pairs", type=int, default=2, help="quiet/loaded phase pairs")
    args = parser.parse_args()
    manifest = json.loads((args.compress_out / "manifest.json").read_text())
    target = get_target(manifest["target"]["name"])
    print(f"# {args.compress_out}: target {manifest['target']['name']}, compress printed {manifest.get('speedup_p50', 0):.1f}x "
          f"(CI {manifest.get('speedup_ci95')})")
    quiet_vs_loaded(target, args.compress_out, args.pairs)
    settings_audit(target, args.compress_out, manifest)


if __name__ == "__main__":
    main()
