"""A fake Jetson reachable over the tests' real sshd: device-tree files, L4T release, nvpmodel, jetson_clocks, trtexec.

Only the NVIDIA tools are stand-ins (tests/fake_trtexec.py replays documented-format outputs);
the SSH transport, file copies, remote commands, df and the work-dir clean-up are all real.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "targets" / "fixtures" / "trtexec"

DEVICES = {
    "orin-nano-devkit": ("NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234",
                         7650336, "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:51:37 UTC 2025"),
    "agx-orin-64": ("NVIDIA Jetson AGX Orin Developer Kit", "nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234",
                    64335836, "# R39 (release), REVISION: 2.0, GCID: 41234567, BOARD: generic, EABI: aarch64, DATE: Mon Jun 1 00:00:00 UTC 2026"),
    "raspberry-pi": ("Raspberry Pi 5 Model B Rev 1.0", "raspberrypi,5-model-b\0brcm,bcm2712", 8000000, ""),
}

NVPMODEL_CONF = """< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=7W >
CPU_ONLINE CORE_0 1
"""

NVPMODEL = r"""#!/bin/sh
# stand-in for nvpmodel: -q prints the mode like the real tool, -m switches unless ./deny exists
DIR=$(dirname "$0")
case "$1" in
  -q) id=$(cat "$DIR/nvpmodel.state"); name=$(sed -n "s/^< POWER_MODEL ID=$id NAME=\([^ >]*\) >.*/\1/p" "$DIR/../etc/nvpmodel.conf")
      echo "NV Power Mode: $name"; echo "$id" ;;
  -m) if [ -f "$DIR/deny" ]; then echo "sudo: a password is required" >&2; exit 1; fi
      if [ -f "$DIR/needs-reboot" ]; then echo "NVPM WARN: Reboot required for changing to this power mode: $2"; exit 0; fi
      echo "$2" > "$DIR/nvpmodel.state" ;;
  *) echo "usage" >&2; exit 2 ;;
esac
"""

JETSON_CLOCKS = """#!/bin/sh
echo "SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit"
echo "Online CPUs: 0-5"
echo "GPU MinFreq=306000000 MaxFreq=1020000000 CurrentFreq=306000000"
echo "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=0"
echo "NV Power Mode: MAXN_SUPER"
"""


def make_device(root: Path, kind: str = "orin-nano-devkit", trt: str = "10.3", mode: str = "ok", power_id: int = 0,
                gpu: str = "Orin", sm: str = "8.7", engine_factor: int = 1, with_trtexec: bool = True) -> Path:
    model, compatible, mem_kb, release = DEVICES[kind]
    for sub in ("dt", "etc", "bin", "work", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dt" / "model").write_bytes(model.encode() + b"\0")
    (root / "dt" / "compatible").write_bytes(compatible.encode() + b"\0")
    (root / "etc" / "nv_tegra_release").write_text(release + "\n" if release else "")
    (root / "etc" / "nvpmodel.conf").write_text(NVPMODEL_CONF)
    (root / "bin" / "nvpmodel.state").write_text(f"{power_id}\n")
    for name, text in (("nvpmodel", NVPMODEL), ("jetson_clocks", JETSON_CLOCKS)):
        (root / "bin" / name).write_text(text)
        (root / "bin" / name).chmod(0o755)
    if with_trtexec:
        script = (Path(__file__).resolve().parent / "fake_trtexec.py").read_text()
        (root / "bin" / "trtexec").write_text(f"#!{sys.executable}\n{script}")
        (root / "bin" / "trtexec").chmod(0o755)
        (root / "bin" / "trtexec.json").write_text(json.dumps({"version": trt, "fixtures": str(FIXTURES), "mode": mode, "gpu": gpu, "sm": sm,
                                                               "engine_factor": engine_factor}))
    (root / "meminfo_kb").write_text(str(mem_kb))
    return root


def device_config(root: Path, sshd, calibration: Path, **overrides):
    from squeeze.targets.jetson import JetsonConfig
    from squeeze.targets.trtexec import TrtexecTiming

    base = dict(trtexec=str(root / "bin" / "trtexec"), device_tree=str(root / "dt"), release_file=str(root / "etc" / "nv_tegra_release"),
                nvpmodel=str(root / "bin" / "nvpmodel"), nvpmodel_conf=str(root / "etc" / "nvpmodel.conf"),
                jetson_clocks=str(root / "bin" / "jetson_clocks"), sudo="", work_base=str(root / "work"), cache_dir=str(root / "cache"),
                min_free_mb=1, timing=TrtexecTiming(warmup_ms=2000, duration_s=10), calibration_file=str(calibration), ssh=sshd.options())
    return JetsonConfig(**{**base, **overrides})


def calls(root: Path) -> list[list[str]]:
    path = root / "bin" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
