"""Builders of hostile inputs, made at test time: every one tries to run `touch SENTINEL` (or to
slip a wrong artifact past squeeze), so a test can assert that the sentinel never appears."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def touch_code(sentinel: Path) -> str:
    return f"__import__('os').system('touch {sentinel}')"


class Payload:
    """Unpickling this runs `touch sentinel`: the classic __reduce__ gadget."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def rewrite_zip(src: Path, dst: Path, edit_json: Callable[[dict[str, Any]], None] | None = None,
                add: tuple[tuple[str, bytes], ...] = (), replace: dict[str, bytes] | None = None) -> Path:
    """Copy a zip archive member by member, editing the program JSON, replacing or adding members."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            suffix = info.filename.split("/", 1)[-1]
            if suffix in replace:
                data = replace[suffix]
            elif edit_json is not None and info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                edit_json(doc)
                data = json.dumps(doc).encode()
            zout.writestr(info, data)
        for name, data in add:
            zout.writestr(name, data)
    return dst


def pt2_root(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()[0].split("/", 1)[0]


def first_expr(doc: dict[str, Any]) -> dict[str, Any]:
    for value in doc["graph_module"]["graph"]["tensor_values"].values():
        for size in value.get("sizes", []):
            if "as_expr" in size:
                return size["as_expr"]
    raise AssertionError("no symbolic size in this program (export it with a dynamic batch)")


def hostile_pt2s(clean: Path, out: Path, sentinel: Path) -> dict[str, Path]:
    """One .pt2 per hole of torch's deserializer, each built from a clean dynamic-batch archive."""
    code = touch_code(sentinel)
    root = pt2_root(clean)

    def expr(doc):
        e = first_expr(doc)
        e["expr_str"] = f"({code} and 0) or {e['expr_str']}"

    def guards(doc):
        doc["guards_code"] = [f"{code} == 0"]

    def target(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    def range_key(doc):
        doc["range_constraints"][f"{code}"] = {"min_val": 1, "max_val": 8}

    def treespec(doc):
        sig = doc["graph_module"]["module_call_graph"][0]["signature"]
        sig["in_spec"] = json.dumps([1, {"type": "os.system", "context": "null", "children_spec": []}])

    def source_fn(doc):
        doc["graph_module"]["graph"]["nodes"][0]["metadata"]["source_fn_stack"] = "x,#evil.op"

    sample = io.BytesIO()
    pickle.dump(Payload(sentinel), sample)
    files = {
        "expr_str": rewrite_zip(clean, out / "expr.pt2", expr),
        "guards_code": rewrite_zip(clean, out / "guards.pt2", guards),
        "node_target": rewrite_zip(clean, out / "target.pt2", target),
        "range_constraints": rewrite_zip(clean, out / "range.pt2", range_key),
        "treespec": rewrite_zip(clean, out / "treespec.pt2", treespec),
        "source_fn_stack": rewrite_zip(clean, out / "source_fn.pt2", source_fn),
        "aotinductor": rewrite_zip(clean, out / "aoti.pt2", add=((f"{root}/data/aotinductor/model/model.so", b"\x7fELF"),)),
        "zip_traversal": rewrite_zip(clean, out / "traversal.pt2", add=((f"{root}/../../evil.txt", b"x"),)),
        "unknown_member": rewrite_zip(clean, out / "unknown.pt2", add=((f"{root}/code/__init__.py", code.encode()),)),
        "pickled_sample_inputs": rewrite_zip(clean, out / "sample.pt2", replace={"data/sample_inputs/model.pt": sample.getvalue()}),
    }
    legacy = out / "legacy.pt2"
    with zipfile.ZipFile(legacy, "w") as zf:
        zf.writestr("version", "8.0")
        zf.writestr("serialized_exported_program.json", "{}")
        zf.writestr("serialized_state_dict.pt", sample.getvalue())
    files["legacy_layout"] = legacy
    return files


def hostile_pickles(out: Path, sentinel: Path, state_dict: dict[str, torch.Tensor]) -> dict[str, Path]:
    """The pickle gadget in every container squeeze reads as a model."""
    files = {}
    raw = out / "raw_pickle.pt"
    raw.write_bytes(pickle.dumps(Payload(sentinel)))
    files["plain_pickle"] = raw
    zipped = out / "torch_save_zip.pt"
    torch.save({"state_dict": state_dict, "extra": Payload(sentinel)}, zipped)
    files["torch_save_zip"] = zipped
    legacy = out / "torch_save_legacy.pt"
    torch.save(Payload(sentinel), legacy, _use_new_zipfile_serialization=False)
    files["torch_save_legacy"] = legacy
    return files


def hostile_datasets(out: Path, sentinel: Path) -> dict[str, Path]:
    """Data files that carry a pickle: an object-array .npz and a pickled .pt."""
    npz = out / "object.npz"
    np.savez(npz, x=np.array([Payload(sentinel)], dtype=object), y=np.zeros(1, dtype=np.int64))
    pt = out / "data.pt"
    torch.save({"x": torch.zeros(4, 1, 8, 8), "y": Payload(sentinel)}, pt)
    return {"object_npz": npz, "pickled_pt": pt}


def hostile_cifar_python(out: Path, sentinel: Path) -> Path:
    """The python-pickle CIFAR-10 release with a gadget in one batch."""
    root = out / "cifar-10-batches-py"
    root.mkdir(parents=True)
    good = {b"data": bytes(3072 * 2), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps(good))
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload(sentinel), b"labels": [0]}))
    return out
