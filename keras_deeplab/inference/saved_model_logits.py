"""A SavedModel export used as a model: its `logits` signature behind the
two things inference calls (`predict_on_batch`, `output_shape`), so
multi-scale, flip and tiling run on it as on the Keras model.

This is the route to our exports that does not go through Keras at all
(`tf.saved_model.load`), e.g. for Beam, whose TensorFlow handler's
`tf.keras.models.load_model` cannot read a Keras 3 export
(apache/beam#30616).
"""

import numpy as np

# `export.saved_model`'s float signature; named here, not imported, because
# export sits above inference (tests/export/test_saved_model.py checks it).
LOGITS_SIGNATURE = "logits"


class SavedModelLogits:
    """Logits of a SavedModel version folder (`<out>/<name>/<version>`)."""

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        self._logits = self._loaded.signatures[LOGITS_SIGNATURE]
        (output,) = self._logits.structured_outputs.values()
        self.output_shape = (None, None, None, int(output.shape[-1]))

    def predict_on_batch(self, images) -> np.ndarray:
        images = self._tf.constant(np.asarray(images), self._tf.float32)
        (logits,) = self._logits(images=images).values()
        return logits.numpy()
