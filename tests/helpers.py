"""Small helpers shared by tests (fixtures live in conftest.py)."""

import numpy as np

# Width-reduced settings: the same graph as ResNet-50/ASPP with 8x fewer
# backbone filters and 16 head filters, so tests run in seconds on a CPU.
TINY = {"backbone_width": 8, "head_filters": 16}


def random_images(batch, height, width, seed=0):
    """RGB float32 images in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, height, width, 3)).astype("float32")
