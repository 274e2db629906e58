"""The bundled teachers are real: committed, reloadable in both formats, and accurate on held-out MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from squeeze.measure.analysis import count_macs
from squeeze.io.data import load_data
from squeeze.measure.accuracy import accuracy, torch_predictions
from squeeze.io.modelio import load_model

TEACHERS = Path(__file__).resolve().parent.parent / "samples" / "teachers"
INDEX = json.loads((TEACHERS / "teachers.json").read_text())


@pytest.mark.parametrize("name", ["resnet_mnist", "mobilenetv2_mnist"])
def test_mnist_teacher_accuracy_and_size(name):
    ckpt = load_model(TEACHERS / f"{name}.pt")
    data = load_data("mnist")
    module = ckpt.module.to(memory_format=torch.channels_last)  # 1.8x faster on MobileNetV2's depthwise convs, same predictions
    acc = accuracy(*torch_predictions(module, data.loader("eval", batch_size=500)))
    assert acc >= 0.98  # a real teacher on the 2000 held-out images
    assert acc == pytest.approx(INDEX[name]["eval_accuracy"]) == pytest.approx(ckpt.metadata["eval_accuracy"])
    assert 40e6 <= count_macs(ckpt.module, ckpt.input_spec.example()) <= 150e6
    assert (TEACHERS / f"{name}.pt").stat().st_size < 5e6


@pytest.mark.parametrize("name", ["resnet_mnist", "mobilenetv2_mnist", "resnet_digits"])
def test_pt2_and_checkpoint_agree(name):
    ckpt = load_model(TEACHERS / f"{name}.pt")
    program = load_model(TEACHERS / f"{name}.pt2")
    data = load_data(INDEX[name]["dataset"])
    x, _ = data.batch("eval", 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module(x), ckpt.module(x), rtol=1e-4, atol=1e-4)
    assert program.input_spec.shape == ckpt.input_spec.shape and program.input_spec.dynamic_batch


def test_digits_teacher():
    ckpt = load_model(TEACHERS / "resnet_digits.pt")
    acc = accuracy(*torch_predictions(ckpt.module, load_data("digits").loader("eval")))
    assert acc >= 0.95 and ckpt.input_spec.shape == (1, 1, 8, 8)
