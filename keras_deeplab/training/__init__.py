"""Training with model.fit: the objective and its pixel losses, class
weights, schedules, callbacks, the recipe, the work folder and `fit.train`.

Submodules import TensorFlow (tf.data, tf.distribute); the model code in
`keras_deeplab.models` does not, so it also runs under KERAS_BACKEND=jax.
"""
