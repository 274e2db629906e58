"""Fixtures the quantization tests share: the bundled digits data and the digits ResNet teacher (module-local
fixtures of the same name, as in test_search.py, take precedence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from squeeze.io.data import load_data
from squeeze.io.modelio import load_model

DIGITS_TEACHER = Path(__file__).resolve().parents[2] / "samples" / "teachers" / "resnet_digits.pt"


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def teacher():
    return load_model(DIGITS_TEACHER)
