"""Target registry: every planned target is listed; those that cannot run here say why and never return numbers."""

from __future__ import annotations

import pytest

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.targets import get_target, target_names
from squeeze.targets.base import ProfileSpec, Target

PLANNED = ["cpu", "cuda", "tensorrt", "jetson", "jetson-orin-nano", "jetson-orin-nano-4gb", "jetson-orin-nx", "jetson-orin-nx-8gb",
           "jetson-agx-orin", "jetson-agx-orin-32gb", "ssh"]


def test_all_planned_targets_registered():
    assert set(PLANNED) <= set(target_names())
    for name in PLANNED:
        assert isinstance(get_target(name), Target)


def test_unknown_target_lists_known_ones():
    with pytest.raises(UserInputError, match="unknown target 'tpu'.*cpu"):
        get_target("tpu")


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"])
def test_jetson_without_device_predicts_and_refuses_to_measure(name, tiny_onnx_path):
    from squeeze.io.modelio import load_onnx

    target = get_target(name)
    availability = target.available()
    assert not availability.available and "no --device" in availability.reason
    with pytest.raises(TargetUnavailableError, match=f"target {name} is unavailable"):
        target.profile(load_onnx(tiny_onnx_path), ProfileSpec(iterations=2))
    assert target.predict(load_onnx(tiny_onnx_path), ProfileSpec()).measured is False


def test_local_targets_refuse_remote_options():
    with pytest.raises(UserInputError, match="target cpu: --device does not apply: this target runs on this machine"):
        get_target("cpu", device="nvidia@jetson")
    with pytest.raises(UserInputError, match="target tensorrt is this machine's GPU"):
        get_target("tensorrt", device="nvidia@jetson")


def test_cuda_availability_checks_the_real_runtime():
    import onnxruntime as ort

    availability = get_target("cuda").available()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not availability.available and "onnxruntime-gpu" in availability.reason


def test_quant_rules_tensorrt_family_are_signed_symmetric():
    for name in ("tensorrt", "jetson-orin-nano"):
        rules = get_target(name).quant_rules
        assert rules.signed_activations and rules.zero_point_must_be_zero and rules.weight_channel_axis == 0
