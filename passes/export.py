"""Export pass: torch model -> ONNX with a parity check on real eval samples (squeeze/io/onnx_export.py does the work)."""

from __future__ import annotations

from typing import ClassVar

from squeeze.io.artifacts import ModelArtifact, OnnxArtifact
from squeeze.io.onnx_export import ExportConfig, export_onnx
from squeeze.passes.base import Context, PassBase


class ExportPass(PassBase):
    name: ClassVar[str] = "export"
    Config: ClassVar[type] = ExportConfig
    input_kind: ClassVar[type] = ModelArtifact
    output_kind: ClassVar[type] = OnnxArtifact

    def run(self, ctx: Context, inp: ModelArtifact, cfg: ExportConfig) -> OnnxArtifact:
        ctx.progress("exporting to ONNX and checking parity")
        art = export_onnx(inp, ctx.run_dir / cfg.filename, cfg, ctx.data)
        ctx.results[self.name] = {"onnx": art.describe(), "parity": art.parity, "exporter": art.provenance[-1]["exporter"]}
        return art
