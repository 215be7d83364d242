"""Multi-scale and flipped inference, and evaluation results."""

import keras
import numpy as np
import pytest

from keras_deeplab import DeepLabV3
from keras_deeplab.evaluation.evaluate import evaluate_model
from keras_deeplab.inference.probabilities import predict_probabilities
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import TINY, random_images


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return DeepLabV3(3, **TINY)


def test_single_scale_is_the_softmax_of_the_logits(model):
    images = random_images(2, 33, 41)
    expected = keras.ops.softmax(model(images), axis=-1)
    np.testing.assert_allclose(
        predict_probabilities(model, images), np.asarray(expected), atol=1e-5
    )


def test_flip_averages_the_mirrored_prediction(model):
    images = random_images(1, 33, 41)
    plain = np.asarray(keras.ops.softmax(model(images), axis=-1))
    mirrored = np.asarray(
        keras.ops.softmax(model(images[:, :, ::-1].copy()), axis=-1)
    )[:, :, ::-1]
    np.testing.assert_allclose(
        predict_probabilities(model, images, flip=True),
        (plain + mirrored) / 2,
        atol=1e-5,
    )


def test_multi_scale_returns_input_size_probabilities(model):
    images = random_images(2, 33, 41)
    probabilities = predict_probabilities(
        model, images, scales=(0.5, 0.75, 1.25, 1.75), flip=True
    )
    assert probabilities.shape == (2, 33, 41, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_evaluate_model_on_a_perfect_predictor(model):
    images = random_images(2, 17, 17)
    masks = np.argmax(predict_probabilities(model, images), axis=-1)
    masks[:, 0, :] = 255
    results = evaluate_model(model, [(images, masks)], num_classes=3)
    assert results["mean_iou"] == pytest.approx(1.0)
    assert results["pixel_accuracy"] == pytest.approx(1.0)
    assert len(results["per_class_iou"]) == 3


def test_evaluate_model_refuses_an_empty_dataset(model):
    with pytest.raises(UserInputError, match="evaluation dataset is empty"):
        evaluate_model(model, [], num_classes=3)


def test_evaluate_model_takes_the_main_output_of_an_aux_model():
    aux_model = DeepLabV3(3, aux_head=True, **TINY)
    images = random_images(1, 17, 17)
    masks = np.argmax(np.asarray(aux_model(images)["logits"]), axis=-1)
    results = evaluate_model(aux_model, [(images, masks)], num_classes=3)
    assert results["pixel_accuracy"] == pytest.approx(1.0)
