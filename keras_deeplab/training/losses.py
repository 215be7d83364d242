"""Per-pixel segmentation losses on sparse masks with the ignore label.

Every loss (a `keras.losses.Loss` whose `batch_loss` reduces the batch to
one value) takes `y_true` as integer class ids (B, H, W) with 255 for
"ignore" and `y_pred` as logits (B, H, W, C), returns one scalar for the
batch, and is written in `keras.ops`, so it runs on TensorFlow and JAX and
in `model.compile`. Ignored pixels are multiplied out before any loss term
is formed: their gradient is exactly zero, and they count nowhere.

- `PixelCrossEntropy`: cross-entropy, optionally class-weighted (the weighted
  mean of PyTorch's and MMSegmentation's `CrossEntropyLoss`), optionally on
  the hardest pixels only (OHEM, as MMSegmentation's `OHEMPixelSampler`).
- `PixelFocalLoss`: focal loss (Lin et al. 2017), -(1 - p)^gamma log p.
- `SoftDiceLoss`: 1 - mean over classes of (2|P∩G| + s) / (|P| + |G| + s),
  soft P, over the whole batch (as segmentation_models.pytorch).
- `LovaszSoftmaxLoss`: the Lovász extension of the Jaccard loss (Berman et
  al. 2018), over the classes present in the batch's labels.
- `WeightedLossSum`: a weighted sum of the above ("ce+dice").
"""

import keras
from keras import ops

from keras_deeplab.labels import IGNORE_INDEX

_EPSILON = 1e-7


def _pixels(y_true, y_pred):
    """(labels int32 (N,) with ignored ones set to 0, valid float32 (N,),
    logits float32 (N, C)) of every pixel in the batch."""
    logits = ops.cast(y_pred, "float32")
    logits = ops.reshape(logits, (-1, ops.shape(logits)[-1]))
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    valid = ops.not_equal(labels, IGNORE_INDEX)
    return (
        ops.where(valid, labels, 0),
        ops.cast(valid, "float32"),
        logits,
    )


def _true_class_log_probability(labels, logits):
    log_probs = ops.log_softmax(logits, axis=-1)
    return ops.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def _pixel_weights(labels, valid, class_weights):
    if class_weights is None:
        return valid
    table = ops.convert_to_tensor(class_weights, "float32")
    return valid * ops.take(table, labels)


def hardest_pixels(true_probability, valid, *, threshold, min_kept):
    """OHEM's selection (MMSegmentation's `OHEMPixelSampler`): 1.0 for the
    labelled pixels whose true-class probability is below
    max(threshold, the min_kept-th smallest probability), else 0.0.

    So at least `min_kept` pixels are kept when that many are labelled, and
    every pixel the model is less than `threshold` sure of.
    """
    true_probability = ops.stop_gradient(true_probability)
    ordered = ops.sort(ops.where(valid > 0, true_probability, 2.0))
    count = ops.cast(ops.sum(valid), "int32")
    index = ops.maximum(ops.minimum(min_kept, count - 1), 0)
    limit = ops.maximum(ops.take(ordered, index), threshold)
    return valid * ops.cast(true_probability < limit, "float32")


class _BatchLoss(keras.losses.Loss):
    """A loss whose `batch_loss` reduces the whole batch to one value.

    `call` returns it with shape (1,): Keras' mean reduction keeps it as it
    is and divides it by the number of tf.distribute replicas, as it does a
    per-pixel loss. A scalar would skip that division (Keras returns rank-0
    losses untouched): two replicas trained on twice the loss and gradients.
    """

    def call(self, y_true, y_pred):
        return ops.reshape(self.batch_loss(y_true, y_pred), (1,))


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PixelCrossEntropy(_BatchLoss):
    """Softmax cross-entropy from logits, mean over the labelled pixels.

    Args:
        class_weights: None or one non-negative weight per class; the loss
            is then sum(w[y] * ce) / sum(w[y]) over the (kept) pixels.
        ohem_threshold: None, or keep only the pixels whose true-class
            probability is below this (MMSegmentation uses 0.7) ...
        ohem_min_kept: ... but at least this many pixels per batch.
    """

    def __init__(
        self,
        class_weights=None,
        ohem_threshold=None,
        ohem_min_kept=100_000,
        name="cross_entropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.class_weights = (
            None if class_weights is None else list(class_weights)
        )
        self.ohem_threshold = ohem_threshold
        self.ohem_min_kept = ohem_min_kept

    def batch_loss(self, y_true, y_pred):
        labels, valid, logits = _pixels(y_true, y_pred)
        log_probability = _true_class_log_probability(labels, logits)
        kept = valid
        if self.ohem_threshold is not None:
            kept = hardest_pixels(
                ops.exp(log_probability),
                valid,
                threshold=self.ohem_threshold,
                min_kept=self.ohem_min_kept,
            )
        weights = _pixel_weights(labels, kept, self.class_weights)
        total = ops.sum(weights * log_probability)
        return -total / ops.maximum(ops.sum(weights), _EPSILON)

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "ohem_threshold": self.ohem_threshold,
            "ohem_min_kept": self.ohem_min_kept,
        }


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PixelFocalLoss(_BatchLoss):
    """Focal loss: -(1 - p)^gamma log p of the true class p, a weighted
    mean over the labelled pixels; gamma 0 is `PixelCrossEntropy`.

    Args:
        gamma: float >= 0. Focusing parameter (2 in the paper).
        class_weights: None or one weight per class (the paper's alpha).
    """

    def __init__(
        self, gamma=2.0, class_weights=None, name="focal_loss", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma
        self.class_weights = (
            None if class_weights is None else list(class_weights)
        )

    def batch_loss(self, y_true, y_pred):
        labels, valid, logits = _pixels(y_true, y_pred)
        log_probability = _true_class_log_probability(labels, logits)
        losses = -log_probability
        if self.gamma:
            # Bounded away from 0: (1 - p)^gamma has an infinite slope at
            # p = 1 when gamma < 1.
            doubt = ops.maximum(1.0 - ops.exp(log_probability), _EPSILON)
            losses *= ops.power(doubt, self.gamma)
        weights = _pixel_weights(labels, valid, self.class_weights)
        return ops.sum(weights * losses) / ops.maximum(
            ops.sum(weights), _EPSILON
        )

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "class_weights": self.class_weights,
        }


def _probabilities_and_targets(y_true, y_pred):
    """Softmax probabilities and one-hot labels (N, C), zero at ignored
    pixels, and the valid mask (N,)."""
    labels, valid, logits = _pixels(y_true, y_pred)
    num_classes = ops.shape(logits)[-1]
    probabilities = ops.softmax(logits, axis=-1) * valid[:, None]
    targets = ops.one_hot(labels, num_classes) * valid[:, None]
    return probabilities, targets, valid


@keras.saving.register_keras_serializable(package="keras_deeplab")
class SoftDiceLoss(_BatchLoss):
    """1 - the mean over classes of the soft Dice coefficient.

    Args:
        smooth: float. Added to numerator and denominator: a class absent
            from labels and prediction scores 1, and absent from the labels
            only, it pushes its probabilities towards 0.
    """

    def __init__(self, smooth=1.0, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def batch_loss(self, y_true, y_pred):
        probabilities, targets, _ = _probabilities_and_targets(y_true, y_pred)
        overlap = ops.sum(probabilities * targets, axis=0)
        size = ops.sum(probabilities, axis=0) + ops.sum(targets, axis=0)
        dice = (2.0 * overlap + self.smooth) / (size + self.smooth)
        return 1.0 - ops.mean(dice)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="keras_deeplab")
class LovaszSoftmaxLoss(_BatchLoss):
    """Lovász-softmax: per class, the pixel errors |[y = c] - p_c| sorted in
    decreasing order, weighted by the Lovász extension's gradient of the
    Jaccard loss; the mean over the classes present in the labels."""

    def __init__(self, name="lovasz_softmax_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def batch_loss(self, y_true, y_pred):
        probabilities, targets, valid = _probabilities_and_targets(
            y_true, y_pred
        )
        errors = ops.abs(targets - probabilities)  # 0 at ignored pixels
        # Ignored pixels sort after every labelled one (errors are >= 0), so
        # they change no Jaccard value where an error is weighted.
        order_key = ops.where(valid[:, None] > 0, errors, -1.0)
        order = ops.argsort(-ops.stop_gradient(order_key), axis=0)
        sorted_errors = ops.take_along_axis(errors, order, axis=0)
        foreground = ops.take_along_axis(targets, order, axis=0)
        class_pixels = ops.sum(foreground, axis=0)
        intersection = class_pixels - ops.cumsum(foreground, axis=0)
        union = class_pixels + ops.cumsum(1.0 - foreground, axis=0)
        jaccard = 1.0 - intersection / union
        steps = ops.concatenate(
            [jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0
        )
        per_class = ops.sum(sorted_errors * ops.stop_gradient(steps), axis=0)
        present = ops.cast(class_pixels > 0, "float32")
        return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="keras_deeplab")
class WeightedLossSum(_BatchLoss):
    """sum_i weights[i] * losses[i](y_true, y_pred), e.g. CE + Dice.

    Args:
        losses: list of the losses above.
        weights: list of floats, one per loss.
    """

    def __init__(self, losses, weights, name="loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.losses = [
            keras.saving.deserialize_keras_object(loss)
            if isinstance(loss, dict)
            else loss
            for loss in losses
        ]
        self.weights = list(weights)

    def batch_loss(self, y_true, y_pred):
        return sum(
            weight * loss.batch_loss(y_true, y_pred)
            for loss, weight in zip(self.losses, self.weights, strict=True)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "losses": [
                keras.saving.serialize_keras_object(loss)
                for loss in self.losses
            ],
            "weights": self.weights,
        }
