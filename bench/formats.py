"""Does the form a model comes in change what compress makes of it? The same teacher as a state_dict (+ --arch), a
squeeze checkpoint, a .pt2 and TorchScript, each through the default recipe (issue 17), side by side.

    nice -n 5 .venv/bin/python bench/formats.py [--teacher resnet_mnist] [--recipe full] [--work-dir out/formats]

Every form is written from the packaged checkpoint (the same weights), then `squeeze compress FORM --data <its
dataset> --target cpu` runs with the recipe; a finished run is reused on re-run (compress's own output + pass cache
under --work-dir). The table: the output's accuracy on the eval split next to the teacher's, its speed-up and
interval from compress's closing rounds, the student the search chose, what the manifest says was substituted or
dropped, and the wall time. Latency budgets are derived per run (teacher p50 / 4), so students may differ by
measurement noise; the accuracy column is what the issue asks to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from squeeze import api  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402

FORMS = ("state_dict", "checkpoint", "pt2", "torchscript")


def write_forms(name: str, work: Path) -> dict[str, tuple[Path, dict]]:
    """form -> (file, extra compress arguments); every form holds the packaged teacher's weights."""
    source = ROOT / "samples" / "teachers" / f"{name}.pt"
    teacher = load_model(source)
    work.mkdir(parents=True, exist_ok=True)
    state = work / f"{name}.state_dict.pt"
    if not state.exists():
        torch.save(teacher.module.state_dict(), state)
    script = work / f"{name}.ts"
    if not script.exists():
        torch.jit.save(torch.jit.script(teacher.module.eval()), str(script))
    shape = "x".join(map(str, teacher.input_spec.shape))
    return {"state_dict": (state, {"arch": teacher.metadata["arch"] if "arch" in teacher.metadata else "squeeze.zoo:resnet_teacher",
                                   "input_shape": shape}),
            "checkpoint": (source, {}), "pt2": (source.with_suffix(".pt2"), {}), "torchscript": (script, {"input_shape": shape})}


def run_form(form: str, path: Path, extra: dict, data: str, recipe: str, work: Path) -> dict:
    out = work / f"compress-{form}" if recipe == "quick" else work / f"compress-{form}-{Path(recipe).stem}"  # one output per recipe
    if (out / "manifest.json").exists():
        return json.loads((out / "manifest.json").read_text()) | {"_reused": True}
    started = time.perf_counter()
    print(f"[{form}] compress {path.name} --recipe {recipe}", file=sys.stderr, flush=True)
    manifest = api.compress(path, target="cpu", out=out, data=data, recipe=recipe, progress=lambda m: print(f"  [{form}] {m}", file=sys.stderr,
                                                                                                       flush=True), **extra)
    manifest["_wall_s"] = round(time.perf_counter() - started, 1)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="resnet_mnist")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--recipe", default="full")
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "out" / "formats")
    args = parser.parse_args()
    os.environ.setdefault("SQUEEZE_CACHE_DIR", str(args.work_dir / "squeeze-cache"))
    forms = write_forms(args.teacher, args.work_dir)
    rows = {f: run_form(f, *forms[f], args.data, args.recipe, args.work_dir) for f in args.forms}
    print(f"bench/formats.py --teacher {args.teacher} --recipe {args.recipe}: the same weights in each form, compress --target cpu")
    print(f"{'form':<12} {'teacher %':>9} {'output %':>9} {'drop pt':>8} {'speed-up':>9} {'95% CI':>13} {'gate':>5} {'wall s':>7}  student / notes")
    for form, m in rows.items():
        acc = m["accuracy"]
        t, o = acc["teacher_accuracy"] * 100, acc["output_accuracy"] * 100
        lo, hi = m.get("speedup_ci95") or (float("nan"), float("nan"))
        student = ((m.get("student") or {}).get("student") or {}).get("kwargs")
        notes = "; ".join(f"{d['pass']} dropped" for d in m.get("dropped") or [])
        wall = m.get("_wall_s", m.get("seconds", 0))
        print(f"{form:<12} {t:>9.2f} {o:>9.2f} {t - o:>8.2f} {m['speedup_p50']:>8.1f}x {f'{lo:.1f}-{hi:.1f}x':>13} {m['gate']['verdict']:>5} "
              f"{wall:>7.0f}  {student}{'; ' + notes if notes else ''}")


if __name__ == "__main__":
    main()
