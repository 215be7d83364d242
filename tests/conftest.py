"""Shared fixtures: seeding and tiny model settings."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and the backend before every test."""
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def float32_policy():
    """Restores the global dtype policy a test may have changed."""
    yield
    keras.config.set_dtype_policy("float32")
