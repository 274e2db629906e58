"""--output: a tuple/dict model is refused without it (listing its outputs), answers with the one it names,
keeps that choice through a checkpoint, and prunes with its other heads consistent; data with per-pixel
labels and regression targets is read and checked against the model's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from any_output_models import box_net, seg_net
from squeeze.errors import UserInputError
from squeeze.io.artifacts import InputSpec
from squeeze.io.data import load_data, open_data
from squeeze.io.modelio import load_model, save_checkpoint, save_exported_program
from squeeze.io.outputs import final_layers

BOX_SPEC = InputSpec((1, 1, 56, 56))
ARCH = "any_output_models:box_net"


class Pair(nn.Module):
    """A tuple model: class logits and the embedding they come from."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.body(x)
        return self.head(h), h


@pytest.fixture
def box_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "box.pt"
    save_checkpoint(box_net().eval(), path, arch=ARCH, arch_kwargs={}, input_spec=BOX_SPEC)
    return path


def test_a_dict_model_is_refused_without_output_and_lists_its_outputs(box_ckpt):
    with pytest.raises(UserInputError, match=r"returns a dict of 2 outputs: box \(N x 4\), digit \(N x 10\); pick the one to compress "
                                             r"with --output NAME"):
        load_model(box_ckpt, arch=ARCH)
    with pytest.raises(UserInputError, match=r"--output boxes: .* has no output named 'boxes'"):
        load_model(box_ckpt, arch=ARCH, output="boxes")


def test_the_named_output_is_the_model_and_a_checkpoint_keeps_it(box_ckpt, tmp_path):
    art = load_model(box_ckpt, arch=ARCH, output="box")
    x = torch.randn(3, 1, 56, 56)
    with torch.no_grad():
        out, full = art.module(x), box_net().__class__.forward(art.module, x)
    assert art.output_shape == (4,) and art.output_kind() == "logits"  # (N, 4) alone reads as logits: the data says otherwise
    assert torch.equal(out, full["box"]) and art.metadata["output"] == "box" and art.outputs == [("box", "N x 4"), ("digit", "N x 10")]
    assert set(art.module.state_dict()) == set(box_net().state_dict())  # same layer names: checkpoints and pruning see the model
    again = tmp_path / "again.pt"
    save_checkpoint(art.module, again, arch=ARCH, arch_kwargs={}, input_spec=BOX_SPEC, metadata=art.metadata)
    reloaded = load_model(again, arch=ARCH)  # the recorded choice, without --output
    with torch.no_grad():
        assert torch.equal(reloaded.module(x), out)
    with pytest.raises(UserInputError, match="was compressed for its output 'box'"):
        load_model(again, arch=ARCH, output="digit")


def test_tuple_outputs_are_named_by_index_and_a_single_output_takes_no_output(tmp_path):
    spec = InputSpec((1, 1, 8, 8))
    path = tmp_path / "pair.pt2"
    save_exported_program(Pair().eval(), path, spec)
    with pytest.raises(UserInputError, match=r"returns a tuple of 2 outputs: 0 \(N x 3\), 1 \(N x 16\)"):
        load_model(path)
    with pytest.raises(UserInputError, match=r"name one by its index \(0..1\)"):
        load_model(path, output="head")
    with pytest.raises(UserInputError, match=r"the index must be in 0..1"):
        load_model(path, output="2")
    art = load_model(path, output="1")
    assert art.output_shape == (16,) and art.exported_program is None  # the program returns both: exported from the selecting module
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    onnx_art = export_onnx(art, tmp_path / "pair.onnx", ExportConfig(parity_samples=8))
    assert onnx_art.parity["passed"] and onnx_art.parity["samples"] == 8  # torch (N, 16) against the ONNX output: the one picked
    with pytest.raises(UserInputError, match=r"has one output \(N x 2x28x28\); drop --output"):
        ckpt = tmp_path / "seg.pt"
        save_checkpoint(seg_net().eval(), ckpt, arch="any_output_models:seg_net", arch_kwargs={}, input_spec=InputSpec((1, 1, 28, 28)))
        load_model(ckpt, arch="any_output_models:seg_net", output="0")


def test_every_head_keeps_its_outputs_and_stays_consistent_when_pruned(box_ckpt):
    from squeeze.passes.prune.structure import layer_widths, prune_width

    art = load_model(box_ckpt, arch=ARCH, output="box")
    example = BOX_SPEC.example()
    keep = final_layers(art.module, example)
    assert keep == ["box", "digit"]  # the last layer of each output, not only of the one picked
    widths = prune_width(art.module, example, layer_widths(art.module), 0.5, 1, keep, "l2")
    assert widths["features.0.conv"] == 4 and widths["box"] == 4 and widths["digit"] == 10
    with torch.no_grad():
        assert art.module(torch.randn(2, 1, 56, 56)).shape == (2, 4)


def _npz(tmp_path, name, x, y):
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return str(path)


def test_per_pixel_labels_and_regression_targets_are_read_and_checked(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 1, 28, 28)).astype(np.float32)
    masks = (x[:, 0] > 0).astype(np.uint8)
    bundle = load_data(_npz(tmp_path, "seg.npz", x, masks))
    assert bundle.targets == "pixel" and not bundle.has_labels and bundle.num_classes == 2
    xb, yb = bundle.batch("eval", 4)
    assert yb.shape == (4, 28, 28) and yb.dtype == torch.long
    boxes = np.random.default_rng(1).random((40, 4)).astype(np.float32)
    reg = load_data(_npz(tmp_path, "box.npz", x, boxes))
    assert reg.targets == "regression" and reg.describe()["targets"] == "regression" and reg.batch("eval", 2)[1].dtype == torch.float32
    bad = boxes.copy()
    bad[7, 2] = np.nan
    for y, message in ((bad, r"regression targets of 1 of 40 samples hold NaN or Inf values \(the first is sample 7\)"),
                       (masks.astype(np.int64) - 1, "per-pixel labels are negative"),
                       (masks.astype(np.float32), r"got torch.float32 of shape \(40, 28, 28\)"),
                       ((boxes * 10).astype(np.int64), r"regression targets \(N, k\) of floats; got torch.int64")):
        with pytest.raises(UserInputError, match=message):
            load_data(_npz(tmp_path, "bad.npz", x, y))
    seg = load_model(_seg_ckpt(tmp_path), arch="any_output_models:seg_net")
    with pytest.raises(UserInputError, match=r"regression targets of 4 values, but the model outputs N x 2x28x28"):
        open_data(str(tmp_path / "box.npz"), seg)
    with pytest.raises(UserInputError, match=r"per-pixel labels go up to 2, but the model outputs 2 channels"):
        open_data(_npz(tmp_path, "three.npz", x, masks * 2), seg)


def _seg_ckpt(tmp_path):
    path = tmp_path / "seg.pt"
    save_checkpoint(seg_net().eval(), path, arch="any_output_models:seg_net", arch_kwargs={}, input_spec=InputSpec((1, 1, 28, 28)))
    return path
