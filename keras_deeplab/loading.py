"""DeepLabV3(+) from a config or a file: building, loading, initialising.

`model_from_config` builds what a DeepLabConfig describes;
`load_trained_model` loads a `.keras` (safe mode) or `.weights.h5` file for
inference; `initialize_from` starts a model from another's weights by name;
`with_output_stride` moves trained weights to another output stride.
"""

import dataclasses
import zipfile
from pathlib import Path

import keras

from keras_deeplab.errors import UserInputError, first_line
from keras_deeplab.heads.aspp import AUX_CLASSIFIER, HEAD_CLASSIFIER
from keras_deeplab.models import (
    BUILDERS,
    MODEL_FILE_ERRORS,
    inference_model,
    load_weights,
)


def model_from_config(config, *, input_shape=(None, None, 3)) -> keras.Model:
    """DeepLabV3 or V3+ as a DeepLabConfig describes it (BN frozen if
    asked)."""
    model = BUILDERS[config.architecture](
        config.num_classes,
        input_shape=input_shape,
        backbone=config.backbone,
        output_stride=config.output_stride,
        variant=config.variant,
        atrous_rates=config.atrous_rates,
        multi_grid=config.multi_grid,
        image_pooling=config.image_pooling,
        aux_head=config.aux_head,
        backbone_weights=config.backbone_weights,
        backbone_width=config.backbone_width,
        head_filters=config.head_filters,
        dropout_rate=config.dropout_rate,
        bn_momentum=config.bn_momentum,
    )
    if config.init_weights is not None:
        report = initialize_from(model, config.init_weights)
        print(report, flush=True)
    if config.freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # In Keras 3 a non-trainable BN also runs in inference mode.
                layer.trainable = False
    return model


# Layers that may start from scratch when initialising from another model: the
# classifiers when num_classes differs, the aux head when the source had none.
_NEW_WHEN_RESHAPED = (HEAD_CLASSIFIER, AUX_CLASSIFIER)
# A DeepLabV3+ starting from a DeepLabV3 gets its decoder afresh.
_NEW_WHEN_ABSENT = ("aux_head_conv", "aux_head_bn", AUX_CLASSIFIER)
_NEW_WHEN_ABSENT_PREFIX = "decoder_"


def initialize_from(model, path) -> str:
    """Copies the weights of a trained `.keras` model into `model` by name.

    For fine-tuning a trained or converted model (`convert-torchvision`) on
    other data: every weighted layer must exist in the source with the same
    shapes, except the classifiers, which start afresh when `num_classes`
    differs, and the aux head or the DeepLabV3+ decoder, which start afresh
    when the source has none (a V3+ can start from a trained V3).
    Nothing is copied unless all layers fit.

    Args:
        model: the keras.Model to initialise (same backbone and variant).
        path: str or Path. A `.keras` model file (loaded in safe mode).

    Returns:
        One line saying what was copied and what starts afresh.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: listing the layers that do not fit.
    """
    path = _existing_model_file(path)
    if path.suffix != ".keras":
        raise UserInputError(
            f"init_weights {str(path)!r} must be a .keras model file (e.g. "
            "from convert-torchvision or a run's best.keras)."
        )
    loaded = _load_keras(path)
    source = {layer.name: layer for layer in loaded.layers}
    pairs, fresh, problems = [], [], []
    for layer in (layer for layer in model.layers if layer.weights):
        counterpart = source.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if counterpart is None:
            starts_afresh = layer.name in _NEW_WHEN_ABSENT or (
                layer.name.startswith(_NEW_WHEN_ABSENT_PREFIX)
            )
            (fresh if starts_afresh else problems).append(
                f"{layer.name}: absent"
            )
            continue
        source_shapes = [tuple(w.shape) for w in counterpart.weights]
        if source_shapes == shapes:
            pairs.append((counterpart, layer))
        else:
            message = f"{layer.name}: {source_shapes} vs {shapes}"
            (fresh if layer.name in _NEW_WHEN_RESHAPED else problems).append(
                message
            )
    if problems:
        raise UserInputError(
            f"init_weights {str(path)!r} does not fit this model: "
            f"{len(problems)} layers differ ({'; '.join(problems[:6])}). "
            "Use the same backbone, variant and head settings as the source."
        )
    for counterpart, layer in pairs:
        layer.set_weights(counterpart.get_weights())
    started = f"; new: {', '.join(fresh)}" if fresh else ""
    return f"init_weights: {len(pairs)} layers from {path}{started}"


def with_output_stride(model, config, output_stride: int) -> keras.Model:
    """The same trained weights in a model of another output stride.

    Dilation changes no weight shape, so a model trained at output stride 16
    can be evaluated at 8 (denser features, ~3x the compute; +1-1.5 mIoU in
    the paper). Explicit `config.atrous_rates` are scaled with the stride
    (6, 12, 18 at 16 become 12, 24, 36 at 8); None scales automatically.

    Args:
        model: the trained keras.Model, built from `config`.
        config: DeepLabConfig the model was built (and trained) with.
        output_stride: int. 8, 16 or 32.
    """
    rates = config.atrous_rates
    if rates is not None:
        scale = config.output_stride / output_stride
        rates = tuple(int(rate * scale) for rate in rates)
    rebuilt_config = dataclasses.replace(
        config,
        output_stride=output_stride,
        atrous_rates=rates,
        backbone_weights=None,  # every weight comes from `model`
        init_weights=None,
    )
    rebuilt = model_from_config(rebuilt_config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _existing_model_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {str(path)!r} does not exist; expected a .keras file "
            "(e.g. work_dir/best.keras) or a .weights.h5 file."
        )
    return path


def load_trained_model(path, config=None) -> keras.Model:
    """Loads a `.keras` model (safe mode) or `.weights.h5` file for inference.

    Returns the `inference_model`: one logits output, even for a training
    checkpoint saved with its aux head.

    Args:
        path: str or Path. A `.keras` file, or a `.weights.h5` file plus the
            `config` it was trained with.
        config: DeepLabConfig or None. Needed for `.weights.h5` only.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another suffix, or weights without a config.
    """
    path = _existing_model_file(path)
    if path.suffix == ".keras":
        return inference_model(_load_keras(path))
    if path.name.endswith(".weights.h5") and config is not None:
        model = model_from_config(config)
        load_weights(model, path)
        return inference_model(model)
    raise UserInputError(
        f"cannot load {str(path)!r}: expected a .keras file, or a "
        ".weights.h5 file together with the CONFIG it was trained with."
    )


def _load_keras(path) -> keras.Model:
    # safe_mode refuses lambdas and arbitrary code in the archive. Every load
    # is for inference or for weights, so the optimizer and metrics saved
    # with a training checkpoint are not rebuilt.
    if not zipfile.is_zipfile(path):
        raise UserInputError(
            f"model file {str(path)!r} is not a .keras archive (a zip file): "
            "it is empty, truncated or in another format. Use a .keras file "
            "written by model.save or keras-deeplab."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except MODEL_FILE_ERRORS as err:
        raise UserInputError(
            f"model file {str(path)!r} cannot be loaded in safe mode "
            f"({first_line(err)}); expected a DeepLabV3 saved by "
            "keras-deeplab, without Lambda layers or custom code."
        ) from err
