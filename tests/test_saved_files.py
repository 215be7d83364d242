"""Files saved by earlier releases keep loading.

tests/fixtures/release_0_4_0 holds files written by release 0.4.0 (before
the package was regrouped into folders): a tiny DeepLabV3 compiled with the
project's loss (class-weighted CE + Dice), metrics and poly schedule, and a
model with one AtrousDepthwiseConv2D; with an input each and the outputs
0.4.0 computed. Keras finds our classes by their registered names
("keras_deeplab>DeepLab", ...), which must never change.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import assert_loads_with_plain_keras

RELEASE_0_4_0 = Path(__file__).parent / "fixtures" / "release_0_4_0"
FILES = {
    "deeplabv3_tiny_compiled.keras": "deeplabv3_tiny",
    "atrous_depthwise.keras": "atrous_depthwise",
}


@pytest.mark.parametrize("name", FILES)
def test_a_0_4_0_file_loads_in_safe_mode_with_the_same_outputs(name):
    model = keras.saving.load_model(RELEASE_0_4_0 / name, safe_mode=True)
    stem = FILES[name]
    images = np.load(RELEASE_0_4_0 / f"{stem}_input.npy")
    expected_name = "logits" if stem == "deeplabv3_tiny" else "output"
    expected = np.load(RELEASE_0_4_0 / f"{stem}_{expected_name}.npy")
    got = np.asarray(model.predict_on_batch(images))
    np.testing.assert_allclose(
        got, expected, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.slow
def test_0_4_0_files_load_after_nothing_but_import_keras_deeplab():
    assert_loads_with_plain_keras(*(RELEASE_0_4_0 / name for name in FILES))
