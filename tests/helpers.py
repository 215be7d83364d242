"""Small helpers shared by tests (fixtures live in conftest.py)."""

import os

import numpy as np

# Width-reduced settings: the same graph as ResNet-50/ASPP with 8x fewer
# backbone filters and 16 head filters, so tests run in seconds on a CPU.
TINY = {"backbone_width": 8, "head_filters": 16}


def random_images(batch, height, width, seed=0):
    """RGB float32 images in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, height, width, 3)).astype("float32")


def saved_resnet50_reference(tmp_path):
    """A keras.applications ResNet50 (no top, random weights) and the
    `.weights.h5` file it was saved to: ImageNet weights, offline."""
    import keras

    reference = keras.applications.ResNet50(include_top=False, weights=None)
    path = tmp_path / "resnet50_notop.weights.h5"
    reference.save_weights(path)
    return reference, path


def assert_layers_equal(model, reference, names):
    """Every weight of the named layers is identical in both models."""
    for name in names:
        for mine, theirs in zip(
            model.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(mine, theirs)


class PicklePayload:
    """Pickles into a call of os.system that creates `marker`: what a
    hostile .pth carries. A test checks the marker never appears."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


_PLAIN_KERAS_LOAD = """
import sys
import keras_deeplab  # registers the package's Keras classes, nothing else
import keras
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)  # safe mode, compiled
    print("LOADED", path, type(model).__name__, model.compiled)
"""


def assert_loads_with_plain_keras(*paths):
    """Each file loads in a fresh process with `keras.saving.load_model`
    after nothing but `import keras_deeplab`."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", _PLAIN_KERAS_LOAD, *map(str, paths)],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for path in paths:
        assert f"LOADED {path} " in completed.stdout, completed.stdout
