"""Start-up cost of the CLI: CPU seconds (user + system, the process and its children) and wall time of
commands that do almost no work, so what is measured is import and set-up.

    python bench/startup.py [--repeats 5]

CPU time is what a busy host does not inflate much (wall time on a loaded 2-core machine can be 10x the
CPU time); the target is under 1 s of CPU for `squeeze targets` and `squeeze gate --help`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["--help"], ["gate", "--help"], ["targets"], ["compress", "--help"], ["inspect", "samples/teachers/resnet_digits.pt"]]


def run_once(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "squeeze", *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'command':<48} {'CPU s (median)':>14} {'wall s (median)':>15}")
    for argv in COMMANDS:
        runs = [run_once(argv) for _ in range(args.repeats)]
        cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{'squeeze ' + ' '.join(argv):<48} {cpu:>14.2f} {wall:>15.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.repeats} runs each")


if __name__ == "__main__":
    main()
