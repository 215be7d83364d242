"""The model code is backend-agnostic: JAX reproduces the TensorFlow output."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_deeplab.models import build_model
from keras_deeplab.spec import ModelSpec
from tests.helpers import TINY, random_images

REPO_ROOT = Path(__file__).resolve().parents[1]

_JAX_FORWARD = """
import sys, numpy as np, keras
from keras_deeplab.models import build_model
from keras_deeplab.spec import ModelSpec
assert keras.backend.backend() == "jax", keras.backend.backend()
weights, images, out, variant, architecture = sys.argv[1:6]
spec = ModelSpec(architecture=architecture, num_classes=3, aux_head=True,
                 backbone_width=8, head_filters=16, variant=variant)
model = build_model(spec, weights=weights)
outputs = model.predict(np.load(images), verbose=0)
np.save(out, outputs["logits"])
"""


@pytest.mark.parametrize(
    ("architecture", "variant"),
    [
        ("deeplabv3", "keras_applications"),
        ("deeplabv3", "torchvision"),
        ("deeplabv3plus", "keras_applications"),
    ],
)
def test_jax_forward_pass_matches_tensorflow(tmp_path, architecture, variant):
    pytest.importorskip("jax")
    spec = ModelSpec(
        architecture=architecture,
        num_classes=3,
        aux_head=True,
        variant=variant,
        **TINY,
    )
    model = build_model(spec)
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    images = random_images(2, 97, 65)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [
            sys.executable,
            "-c",
            _JAX_FORWARD,
            str(weights),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
            variant,
            architecture,
        ],
        env=env,
        check=True,
        cwd=tmp_path,
    )
    jax_logits = np.load(tmp_path / "out.npy")
    assert jax_logits.shape == (2, 97, 65, 3)
    np.testing.assert_allclose(
        jax_logits, np.asarray(model(images)["logits"]), atol=1e-3, rtol=1e-3
    )
