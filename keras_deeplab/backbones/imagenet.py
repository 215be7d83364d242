"""keras.applications ImageNet weights for the dilated ResNet, by layer name.

The backbone's layer names and weight shapes equal those of
`keras.applications.ResNet50/101(include_top=False)` in the default
"keras_applications" layout, so its ImageNet weights transfer by name;
dilation changes no weight shape, so one file serves every output stride.
"""

import os
from pathlib import Path

import keras

from keras_deeplab.errors import UserInputError
from keras_deeplab.spec import check_imagenet_weights_fit

# The file name keras.applications downloads and caches the weights under.
IMAGENET_FILE = "resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5"
_REFERENCE_BUILDERS = {
    50: keras.applications.ResNet50,
    101: keras.applications.ResNet101,
}


def _reference_builder(depth):
    if depth not in _REFERENCE_BUILDERS:
        raise UserInputError(
            f"depth={depth!r} is not supported; expected one of "
            f"{tuple(_REFERENCE_BUILDERS)}."
        )
    return _REFERENCE_BUILDERS[depth]


def _reference_resnet(depth, weights):
    """keras.applications ResNet without top, holding `weights`."""
    builder = _reference_builder(depth)
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"backbone weights file {weights!r} does not exist; expected "
            f"'imagenet' or the path of a resnet{depth} notop .h5 file from "
            "keras.applications."
        )
    return builder(include_top=False, weights=weights)


def cached_imagenet_weights(depth) -> Path | None:
    """The keras.applications ImageNet *_notop.h5 file if already cached.

    Keras downloads it to $KERAS_HOME/models (default ~/.keras/models) on
    first use of `weights="imagenet"`; on an offline machine copy the file
    there, or pass its path as `backbone_weights`.
    """
    _reference_builder(depth)
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / IMAGENET_FILE.format(depth=depth)
    return path if path.is_file() else None


def load_imagenet_weights(
    model, *, depth, weights="imagenet", variant="keras_applications"
):
    """Copies keras.applications ResNet weights into `model` by layer name.

    Args:
        model: keras.Model containing the backbone layers (a backbone or a
            full DeepLabV3 model).
        depth: int. 50 or 101.
        weights: "imagenet" (Keras downloads and caches the file) or a path to
            a local `..._notop.h5` / `.weights.h5` file for offline machines.
        variant: str. The layout of `model`; only "keras_applications" fits
            these weights.

    Raises:
        FileNotFoundError: if `weights` is a path that does not exist.
        ValueError: if any weighted layer is missing or differs in shape, or
            `model` has the torchvision layout.
    """
    check_imagenet_weights_fit(weights, variant)
    transfer_weights(_reference_resnet(depth, weights), model)


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
