"""Shared fixtures (seeding, dtype policy) and how xdist splits the suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_deeplab.memory import release_freed_memory  # noqa: E402


def _shares_a_fixture(item):
    """The test uses a module- or session-scoped fixture of ours (other
    than the housekeeping every module has)."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        definition.scope in ("module", "session")
        and definition.argname != "released_after_each_module"
        and not definition.func.__module__.startswith("_pytest")
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """With `--dist loadgroup` (setup.cfg), the tests of a module that share
    a module-scoped model or export run on one xdist worker, so it is built
    once; every other test goes to whichever worker is free. Modules that
    share a session fixture name one group: `pytestmark = xdist_group(...)`.
    """
    for item in items:
        if not item.get_closest_marker("xdist_group") and _shares_a_fixture(
            item
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(autouse=True, scope="module")
def released_after_each_module():
    """Each xdist worker runs hundreds of tests in one process: Keras' global
    state and TensorFlow's traced functions of a finished module are freed
    (a worker reached 9 GB without this)."""
    yield
    keras.backend.clear_session()
    release_freed_memory()


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
