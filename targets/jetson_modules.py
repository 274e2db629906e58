"""The Jetson modules squeeze knows (SM, TOPS, bandwidth, power modes) and the parsers of what a device reports about itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from squeeze.targets.predictor import Hardware
from squeeze.targets.trtexec import TrtVersion


@dataclass(frozen=True)
class JetsonModule:
    key: str
    module: str
    skus: tuple[str, ...]  # device-tree compatible part numbers (p3767-0005 = the Orin Nano developer kit module)
    memory_gb: int
    tensor_cores: int
    gpu_mhz: float  # maximum GPU clock, original power modes
    gpu_mhz_super: float | None  # JetPack 6.2 "MAXN SUPER"
    int8_sparse_tops: float  # data-sheet headline (GPU + DLA), original
    int8_sparse_tops_super: float | None
    bandwidth_gbs: float
    bandwidth_gbs_super: float | None
    dla_cores: int
    power_w: str
    sm: str = "8.7"
    default_software: str = "JetPack 6.x (L4T 36.x): TensorRT 10.3, CUDA 12.6"

    def hardware(self, power_mode: str | None = None) -> Hardware:
        """GPU-only dense peaks for the power mode: Super figures when the mode name says SUPER."""
        super_mode = bool(power_mode and "SUPER" in power_mode.upper() and self.gpu_mhz_super)
        mhz = self.gpu_mhz_super if super_mode else self.gpu_mhz
        clock = self.tensor_cores * mhz * 1e6
        return Hardware(
            name=f"Jetson {self.module}" + (" (Super)" if super_mode else ""),
            sm=self.sm,
            int8_tops=clock * 1024 / 1e12,
            fp16_tflops=clock * 512 / 1e12,
            tf32_tflops=clock * 256 / 1e12,
            bandwidth_gbs=(self.bandwidth_gbs_super if super_mode else self.bandwidth_gbs) or self.bandwidth_gbs,
            source=f"{self.tensor_cores} tensor cores x {mhz:g} MHz (NVIDIA Jetson Orin data sheets; see targets/jetson.py)",
        )


MODULES = {m.key: m for m in (
    JetsonModule("jetson-orin-nano", "Orin Nano 8GB", ("p3767-0003", "p3767-0005"), 8, 32, 625, 1020, 40, 67, 68, 102, 0, "7-15 W (25 W Super)"),
    JetsonModule("jetson-orin-nano-4gb", "Orin Nano 4GB", ("p3767-0004",), 4, 16, 625, 1020, 20, 34, 34, 51, 0, "7-10 W (25 W Super)"),
    JetsonModule("jetson-orin-nx", "Orin NX 16GB", ("p3767-0000",), 16, 32, 918, 1173, 100, 157, 102.4, 102.4, 2, "10-25 W (40 W Super)"),
    JetsonModule("jetson-orin-nx-8gb", "Orin NX 8GB", ("p3767-0001",), 8, 32, 765, 1173, 70, 117, 102.4, 102.4, 1, "10-20 W (40 W Super)"),
    JetsonModule("jetson-agx-orin", "AGX Orin 64GB", ("p3701-0005", "p3701-0008"), 64, 64, 1300, None, 275, None, 204.8, None, 2, "15-60 W",
                 default_software="JetPack 6.x: TensorRT 10.3; JetPack 7.2.2+: TensorRT 11.4"),
    JetsonModule("jetson-agx-orin-32gb", "AGX Orin 32GB", ("p3701-0004",), 32, 56, 930, None, 200, None, 204.8, None, 2, "15-40 W",
                 default_software="JetPack 6.x: TensorRT 10.3; JetPack 7.2.2+: TensorRT 11.4"),
)}
JETSON_PROFILES = list(MODULES)  # registry names
ALIAS = "jetson"  # detect the module on --device; without one, assume:
DEFAULT_MODULE = "jetson-orin-nano"
DEFAULT_TRT_FOR_COMMANDS = TrtVersion(10, 3)  # JetPack 6.x, what Orin ships with today


def detect_module(model: str, compatible: list[str], mem_total_kb: int | None) -> str | None:
    """Registry key for the device, from its device-tree SKU, else its model string + memory size."""
    for sku in compatible:
        part = sku.split(",")[-1].split("+")[-1].strip()
        for module in MODULES.values():
            if part in module.skus:
                return module.key
        if part == "p3701-0000":  # early AGX Orin developer kits: 32 GB or 64 GB, tell by memory
            return "jetson-agx-orin" if (mem_total_kb or 0) > 40 * 2**20 else "jetson-agx-orin-32gb"
    gb = (mem_total_kb or 0) / 2**20
    if "Orin Nano" in model:
        return "jetson-orin-nano-4gb" if 0 < gb < 5 else "jetson-orin-nano"
    if "Orin NX" in model:
        return "jetson-orin-nx-8gb" if 0 < gb < 10 else "jetson-orin-nx"
    if "AGX Orin" in model:
        return "jetson-agx-orin-32gb" if 0 < gb < 40 else "jetson-agx-orin"
    return None


def jetpack_from_l4t(l4t: str | None) -> str | None:
    """L4T release -> JetPack (deploy.md §2.3); the TensorRT version itself is read from trtexec."""
    if not l4t:
        return None
    table = [("36.4.4", "6.2.1"), ("36.4.3", "6.2"), ("36.4", "6.1"), ("36.3", "6.0"), ("35.", "5.1"), ("38.2", "7.0"), ("38.4", "7.1"),
             ("39.", "7.2")]
    return next((jp for prefix, jp in table if l4t.startswith(prefix)), None)


def parse_tegra_release(text: str | None) -> str | None:
    """`# R36 (release), REVISION: 4.3, GCID: ...` -> '36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse_nvpmodel_query(text: str | None) -> dict[str, Any] | None:
    """`NV Power Mode: MAXN_SUPER` then the mode id on its own line."""
    match = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if not match:
        return None
    ident = re.search(r"^\s*(\d+)\s*$", (text or "")[match.end():], re.MULTILINE)
    return {"name": match.group(1), "id": int(ident.group(1)) if ident else None}


def parse_nvpmodel_conf(text: str | None) -> dict[int, str]:
    """`< POWER_MODEL ID=2 NAME=MAXN_SUPER >` lines of /etc/nvpmodel.conf -> {2: 'MAXN_SUPER'}."""
    return {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", text or "")}


def parse_clocks(text: str | None) -> dict[str, Any]:
    """`jetson_clocks --show`: GPU/EMC Min/Max/Current; clocks count as locked when GPU min == max."""
    out: dict[str, Any] = {}
    for unit in ("GPU", "EMC"):
        match = re.search(rf"^{unit} MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text or "", re.MULTILINE)
        if match:
            out[unit.lower()] = {"min_hz": int(match.group(1)), "max_hz": int(match.group(2)), "current_hz": int(match.group(3))}
    if "gpu" in out:
        out["locked"] = out["gpu"]["min_hz"] == out["gpu"]["max_hz"]
    return out
