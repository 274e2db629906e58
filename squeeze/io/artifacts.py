"""Artifacts that flow between passes (ARCHITECTURE.md, "The artifact flow")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from squeeze.errors import UserInputError


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: one tensor input, with the batch as dimension 0."""

    shape: tuple[int, ...]
    name: str = "input"
    dtype: str = "float32"
    dynamic_batch: bool = True
    normalization: dict[str, list[float]] | None = None  # how the data was normalised, for deployers

    def example(self, batch: int | None = None) -> Any:
        import torch  # imported where used: `squeeze gate` and `squeeze targets` never load torch

        shape = (batch or self.shape[0], *self.shape[1:])
        return torch.zeros(shape, dtype=getattr(torch, self.dtype))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    def preprocessing(self, data_normalization: dict[str, list[float]] | None = None) -> dict[str, Any]:
        """How a deployer must turn raw pixels into this model's input: the same normalisation the
        data loader applied in training, in torch and in the ONNX parity check."""
        norm = data_normalization or self.normalization
        channels = self.shape[1] if len(self.shape) == 4 else None
        note: dict[str, Any] = {"input": self.name, "layout": "NCHW" if channels else "as the model's input", "dtype": self.dtype,
                                "shape": list(self.shape), "dynamic_batch": self.dynamic_batch}
        if norm is None:
            note["normalization"] = None
            note["formula"] = "feed inputs exactly as the data given to squeeze (it applied no normalisation of its own)"
            return note
        note.update(normalization=norm, channel_order={1: "grayscale", 3: "RGB"}.get(channels, f"{channels} channels"),
                    formula="x[c] = (pixel[c] / 255 - mean[c]) / std[c], for 8-bit pixels, per channel c")
        return note

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(
            shape=tuple(int(s) for s in d["shape"]),
            name=str(d.get("name", "input")),
            dtype=str(d.get("dtype", "float32")),
            dynamic_batch=bool(d.get("dynamic_batch", True)),
            normalization=d.get("normalization"),
        )


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'1x3x32x32' -> (1, 3, 32, 32); one clear error for anything else."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--input-shape must look like 1x3x32x32 (positive integers joined by 'x'), got {text!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise UserInputError(f"--input-shape must have a batch dimension and positive sizes, got {text!r}")
    return shape


@dataclass
class ModelArtifact:
    """A torch model plus its input spec and where it came from."""

    module: Any  # torch.nn.Module
    input_spec: InputSpec
    source: str
    format: str  # "checkpoint", "state_dict", "pt2", "torchscript", "pickle"
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. dataset and accuracy recorded with a checkpoint
    provenance: list[dict[str, Any]] = field(default_factory=list)
    exported_program: Any = None  # torch.export.ExportedProgram when loaded from .pt2
    output_shape: tuple[int, ...] | None = None  # per-sample output shape (set by the load-time forward check)
    outputs: list[tuple[str, str]] | None = None  # a multi-output model's outputs (name, shape); metadata["output"] is the one kept

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "sha256": self.sha256, "input_spec": self.input_spec.to_dict()}

    def probe_output_shape(self) -> tuple[int, ...]:
        if self.output_shape is None:
            import torch

            with torch.no_grad():
                out = self.module(self.input_spec.example(batch=2))
            self.output_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
        return self.output_shape

    @property
    def output_classes(self) -> int | None:
        """The number of classes when the model outputs (N, classes) logits, else None."""
        shape = self.probe_output_shape()
        return shape[0] if len(shape) == 1 else None

    def output_kind(self, data: Any = None) -> str:
        """'logits', 'map' or 'values' (output_kind below), with what the data says of its targets."""
        return output_kind(self.probe_output_shape(), getattr(data, "targets", None))


def output_kind(shape: tuple[int, ...], targets: str | None = None) -> str:
    """What a per-sample output is: 'logits' for (classes,) unless the data holds regression targets for it,
    'map' for (C, H, W) dense maps, else 'values' (regression vectors, other tensors). Only logits have a
    class to agree on; the others are compared to the teacher's outputs (squeeze/measure/fidelity.py)."""
    if len(shape) == 1 and targets != "regression":
        return "logits"
    return "map" if len(shape) == 3 else "values"


@dataclass
class OnnxArtifact:
    """An ONNX file with its hash, opset and the parity measured against its torch source."""

    path: Path
    sha256: str
    opset: int
    input_spec: InputSpec
    producer: str = ""
    parity: dict[str, Any] | None = None
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "opset": self.opset,
            "producer": self.producer,
            "input_spec": self.input_spec.to_dict(),
            "parity": self.parity,
        }
