"""Stand-in for NVIDIA's trtexec on the tests' loopback "device" (installed there with this Python as interpreter).

It replays the recorded, documented-format outputs in tests/targets/fixtures/trtexec/ (NOT captures
from a real device), writes the files trtexec would write (--saveEngine, --exportTimes,
--exportProfile, --exportLayerInfo), and appends its argv to calls.jsonl so tests can check the
exact command line squeeze sent. It behaves like the real tool where the tests depend on it:
TensorRT 11 rejects the removed precision flags with "Unknown option"; "parse_error" mode prints
the ONNX parser's errors; a failed engine write prints trtexec's "Cannot save engine file".
Its settings come from trtexec.json beside it.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = json.loads((HERE / "trtexec.json").read_text())
FIXTURES = Path(CONFIG["fixtures"])
VERSION = CONFIG["version"]  # "10.3" or "11.4"


def out(name, **subst):
    text = (FIXTURES / name).read_text()
    for key, value in {"ARGS": " ".join(sys.argv[1:]), "GPU": CONFIG.get("gpu", "Orin"), "SM": CONFIG.get("sm", "8.7"), **subst}.items():
        text = text.replace("{" + key + "}", str(value))
    sys.stdout.write(text)


def main():
    args = sys.argv[1:]
    with open(HERE / "calls.jsonl", "a") as fh:
        fh.write(json.dumps(args) + "\n")
    opts = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in args if a.startswith("--"))
    if "help" in opts:
        out(f"help_{VERSION}.txt")
        return 0
    if VERSION.startswith("11"):
        for removed in ("fp16", "int8", "best", "bf16", "fp8", "int4"):
            if removed in opts:
                out("unknown_option_11.4.log", OPTION="--" + removed)
                return 1
    if "onnx" in opts:
        if CONFIG.get("mode") == "parse_error":
            out("parse_error_10.3.log", ONNX=opts["onnx"])
            return 1
        engine = Path(opts["saveEngine"])
        payload = b"FAKE-ENGINE:" + Path(opts["onnx"]).read_bytes() * int(CONFIG.get("engine_factor", 1))
        try:
            engine.write_bytes(payload)
        except OSError:
            out("save_failed_10.3.log", ENGINE=engine)
            return 1
        if "exportLayerInfo" in opts:
            Path(opts["exportLayerInfo"]).write_text(json.dumps({"Layers": ["conv1 + relu1", "gemm"], "Bindings": ["input", "output"]}))
        if "timingCacheFile" in opts:
            Path(opts["timingCacheFile"]).write_bytes(b"timing-cache")
        out(f"build_{VERSION}.log", ONNX=opts["onnx"])
        return 0
    if "loadEngine" in opts:
        if not Path(opts["loadEngine"]).read_bytes().startswith(b"FAKE-ENGINE:"):
            sys.stdout.write("[E] Error[1]: [runtime.cpp::deserializeCudaEngine] Magic tag does not match\n&&&& FAILED\n")
            return 1
        (Path(opts["exportTimes"])).write_text((FIXTURES / f"times_{VERSION}.json").read_text())
        (Path(opts["exportProfile"])).write_text((FIXTURES / f"profile_{VERSION}.json").read_text())
        out(f"profile_{VERSION}.log")
        return 0
    sys.stdout.write("[E] Model missing or format not recognized\n&&&& FAILED\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
