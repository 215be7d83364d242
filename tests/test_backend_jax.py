"""The model code is backend-agnostic: JAX reproduces the TensorFlow output.

One JAX process runs every architecture (starting JAX costs more than the
tiny models themselves)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec
from tests.helpers import TINY, random_images

REPO_ROOT = Path(__file__).resolve().parents[1]

_JAX_FORWARD = """
import json, sys, numpy as np, keras
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec
assert keras.backend.backend() == "jax", keras.backend.backend()
images = np.load(sys.argv[1])
for case in json.loads(sys.argv[2]):
    spec = ModelSpec.from_dict(case["spec"])
    model = build_model(spec, weights=case["weights"])
    outputs = model.predict(images, verbose=0)
    if isinstance(outputs, dict):
        outputs = outputs["logits"]
    np.save(case["out"], outputs)
"""

SPECS = {
    "deeplabv3-keras_applications": ModelSpec(
        num_classes=3, aux_head=True, variant="keras_applications", **TINY
    ),
    "deeplabv3-torchvision": ModelSpec(
        num_classes=3, aux_head=True, variant="torchvision", **TINY
    ),
    "deeplabv3plus": ModelSpec(
        architecture="deeplabv3plus", num_classes=3, aux_head=True, **TINY
    ),
    "lraspp-mobilenet_v3_large": ModelSpec(
        architecture="lraspp",
        backbone="mobilenet_v3_large",
        num_classes=3,
        variant="torchvision",
        head_filters=16,
    ),
}


@pytest.mark.slow
def test_jax_forward_pass_matches_tensorflow(tmp_path):
    pytest.importorskip("jax")
    images = random_images(2, 97, 65)
    np.save(tmp_path / "images.npy", images)
    models, cases = {}, []
    for name, spec in SPECS.items():
        models[name] = build_model(spec)
        weights = tmp_path / f"{name}.weights.h5"
        models[name].save_weights(weights)
        cases.append(
            {
                "spec": spec.to_dict(),
                "weights": str(weights),
                "out": str(tmp_path / f"{name}.npy"),
            }
        )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [
            sys.executable,
            "-c",
            _JAX_FORWARD,
            str(tmp_path / "images.npy"),
            json.dumps(cases),
        ],
        env=env,
        check=True,
        cwd=tmp_path,
    )
    for name, model in models.items():
        outputs = model(images)
        tf_logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        jax_logits = np.load(tmp_path / f"{name}.npy")
        assert jax_logits.shape == (2, 97, 65, 3), name
        np.testing.assert_allclose(
            jax_logits,
            np.asarray(tf_logits),
            atol=1e-3,
            rtol=1e-3,
            err_msg=name,
        )
