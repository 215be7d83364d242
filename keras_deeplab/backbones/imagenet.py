"""keras.applications ImageNet weights for the dilated backbones, by name.

The backbones' layer names and weight shapes equal those of
`keras.applications.ResNet50/101` and `MobileNetV3Large` (without top) in
the default "keras_applications" layout, so their ImageNet weights transfer
by name; dilation changes no weight shape, so one file serves every output
stride.
"""

import os
from pathlib import Path

import keras

from keras_deeplab.spec import check_imagenet_weights_fit
from keras_deeplab.utils.errors import UserInputError

# backbone -> (keras.applications builder, the file Keras caches it as).
_REFERENCES = {
    "resnet50": (
        keras.applications.ResNet50,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101": (
        keras.applications.ResNet101,
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "mobilenet_v3_large": (
        keras.applications.MobileNetV3Large,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    ),
}
# keras.applications builds MobileNetV3 on 224x224 for its weights.
_MOBILENET_SIZE = 224


def _reference(backbone):
    if backbone not in _REFERENCES:
        raise UserInputError(
            f"backbone={backbone!r} has no keras.applications weights; "
            f"expected one of {tuple(_REFERENCES)}."
        )
    return _REFERENCES[backbone]


def imagenet_file(backbone) -> str:
    """The file name keras.applications caches the backbone's weights as."""
    return _reference(backbone)[1]


def _reference_model(backbone, weights):
    """The keras.applications backbone without top, holding `weights`."""
    builder, file_name = _reference(backbone)
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"backbone weights file {weights!r} does not exist; expected "
            f"'imagenet' or the path of keras.applications' {file_name}."
        )
    if backbone.startswith("mobilenet"):
        return builder(
            input_shape=(_MOBILENET_SIZE, _MOBILENET_SIZE, 3),
            include_top=False,
            weights=weights,
        )
    return builder(include_top=False, weights=weights)


def cached_imagenet_weights(backbone) -> Path | None:
    """The keras.applications ImageNet weights file if already cached.

    Keras downloads it to $KERAS_HOME/models (default ~/.keras/models) on
    first use of `weights="imagenet"`; on an offline machine copy the file
    there, or pass its path as `backbone_weights`.
    """
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / imagenet_file(backbone)
    return path if path.is_file() else None


def load_imagenet_weights(
    model, *, backbone, weights="imagenet", variant="keras_applications"
):
    """Copies keras.applications weights into `model` by layer name.

    Args:
        model: keras.Model containing the backbone layers (a backbone or a
            whole segmentation model).
        backbone: str. "resnet50", "resnet101" or "mobilenet_v3_large".
        weights: "imagenet" (Keras downloads and caches the file) or a path to
            a local keras.applications weights file for offline machines.
        variant: str. The layout of `model`; only "keras_applications" fits
            these weights.

    Raises:
        FileNotFoundError: if `weights` is a path that does not exist.
        ValueError: if any weighted layer is missing or differs in shape, or
            `model` has the torchvision layout.
    """
    check_imagenet_weights_fit(weights, variant)
    transfer_weights(_reference_model(backbone, weights), model)


def transfer_weights(source, target):
    """Copies the weights of every weighted layer of `source` into `target`.

    Layers are matched by name; every weighted source layer must exist in
    `target` with identical variable shapes. Nothing is copied unless all
    layers match, so a failed transfer never leaves a half-loaded model.

    Raises:
        ValueError: listing every missing or mismatched layer name.
    """
    target_layers = {layer.name: layer for layer in target.layers}
    missing, mismatched, pairs = [], [], []
    for layer in source.layers:
        if not layer.weights:
            continue
        counterpart = target_layers.get(layer.name)
        if counterpart is None:
            missing.append(layer.name)
            continue
        source_shapes = [tuple(w.shape) for w in layer.weights]
        target_shapes = [tuple(w.shape) for w in counterpart.weights]
        if source_shapes != target_shapes:
            mismatched.append(
                f"{layer.name}: {source_shapes} vs {target_shapes}"
            )
            continue
        pairs.append((layer, counterpart))
    if missing or mismatched:
        raise UserInputError(
            f"cannot transfer weights from {source.name!r} to "
            f"{target.name!r}: {len(missing)} layers missing in the target "
            f"{missing}, {len(mismatched)} with other shapes "
            f"{mismatched}. Build the target with width=64 and the "
            "same depth as the weights."
        )
    for layer, counterpart in pairs:
        counterpart.set_weights(layer.get_weights())
    return len(pairs)
