"""Models the engine's tests share: a discrete and a continuous tiny style-transfer model, built once per module."""

from __future__ import annotations

import pytest
from tiny_models import engine_test_model


@pytest.fixture(scope="module")
def model():
    return engine_test_model(0)


@pytest.fixture(scope="module")
def continuous_model():
    return engine_test_model(1, continuous=True)
