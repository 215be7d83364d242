"""Training with model.fit: losses, metrics, schedules, callbacks, fit, eval.

Submodules import TensorFlow (tf.data, tf.distribute); the model code in
`keras_deeplab.models` does not, so it also runs under KERAS_BACKEND=jax.
"""
