"""Figures used by the notebooks and the demo render and save as PNG."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from keras_deeplab.data.synthetic import synthetic_arrays
from keras_deeplab.labels import SYNTHETIC_CLASSES
from keras_deeplab.visualize import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def samples():
    return synthetic_arrays(3, size=32)


def test_comparison_rows_stacks_image_truth_and_prediction(samples):
    images, masks = samples
    grid = figures.comparison_rows(images, masks, masks)
    assert grid.shape == (3 * 32, 3 * 32, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:32, :32], images[0])


def test_every_figure_saves_a_png(samples, tmp_path):
    images, masks = samples
    history = {
        "loss": [1.0, 0.5],
        "val_loss": [1.1, 0.6],
        "mean_iou": [0.2, 0.4],
        "val_mean_iou": [0.1, 0.3],
    }
    runtime_rows = [
        {"name": "keras", "latency_ms": 12.0, "size_mb": None},
        {"name": "deeplab_int8_64", "latency_ms": 4.0, "size_mb": 1.5},
    ]
    made = {
        "samples": figures.sample_grid(images, masks, columns=4),
        "curves": figures.training_curves(history),
        "iou": figures.class_iou_bars(
            [0.9, None, 0.5, 0.1, 0.3], SYNTHETIC_CLASSES
        ),
        "grid": figures.prediction_grid(images, masks, masks),
        "runtimes": figures.runtime_comparison(runtime_rows),
        "disagree": figures.disagreement_map(
            images[0], masks[0], np.zeros_like(masks[0])
        ),
    }
    for name, figure in made.items():
        assert isinstance(figure, Figure)
        path = figures.save_figure(figure, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == PNG_MAGIC
    title = made["disagree"].axes[3].get_title()
    assert title == f"disagree: {(masks[0] != 0).mean():.2%} of pixels"
