"""Small helpers shared by tests (fixtures live in conftest.py)."""

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
