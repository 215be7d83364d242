"""torchvision and VainF DeepLabV3 / DeepLabV3+ checkpoints -> Keras models.

Reads a checkpoint with `convert.torch_file` (no PyTorch needed; nothing is
unpickled that could run code), maps every tensor by name onto a
`variant="torchvision"` model and refuses, listing them, any missing,
unexpected or shape-mismatched keys.

Accepted files: the state dict of torchvision's `deeplabv3_resnet50/101`
(`torch.save(model.state_dict(), path)`, as torchvision publishes them,
aux head included when present) and VainF/DeepLabV3Plus-Pytorch checkpoints
(`{"model_state": ..., "optimizer_state": ..., ...}`; a DeepLabV3 head under
`classifier.classifier.`, a DeepLabV3+ head as `classifier.project`,
`classifier.aspp` and `classifier.classifier`). Where each tensor goes is
`convert.torchvision_layout`.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np

from keras_deeplab.convert.archs import ARCHS
from keras_deeplab.convert.torch_file import read_torch_file
from keras_deeplab.convert.torchvision_layout import (
    AUX,
    BN_COUNTER,
    DATA_PARALLEL_PREFIX,
    TORCH_TENSORS,
    TORCHVISION_HEAD,
    VAINF_HEAD,
    VAINF_STATE,
    layer_map,
)
from keras_deeplab.heads.aspp import HEAD_CLASSIFIER
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import MOBILENETS, ModelSpec
from keras_deeplab.utils.errors import UserInputError

_MAX_LISTED = 6


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The tensors of a checkpoint file and where its head lives."""

    path: Path
    tensors: dict  # torch key -> float32 numpy array
    head_prefix: str  # torchvision "classifier." or VainF's nesting

    @property
    def has_aux(self) -> bool:
        return any(key.startswith(AUX) for key in self.tensors)


def _state_dict(loaded, path):
    """The {name: array} of a torchvision state dict or a VainF wrapper."""
    head_prefix = TORCHVISION_HEAD
    if isinstance(loaded, dict) and VAINF_STATE in loaded:
        loaded, head_prefix = loaded[VAINF_STATE], VAINF_HEAD
    if not isinstance(loaded, dict) or not loaded:
        raise UserInputError(
            f"checkpoint {str(path)!r} holds a {type(loaded).__name__} that "
            "is not a state dict of tensors; expected torch.save(model."
            "state_dict(), path) or a VainF checkpoint with 'model_state'."
        )
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise UserInputError(
                f"checkpoint {str(path)!r} is not a state dict of tensors: "
                f"entry {key!r} holds a {type(value).__name__}; expected "
                "parameter names mapped to tensors."
            )
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in loaded):
        loaded = {
            key.removeprefix(DATA_PARALLEL_PREFIX): value
            for key, value in loaded.items()
        }
    return loaded, head_prefix


def read_checkpoint(path) -> Checkpoint:
    """Loads a torchvision state dict or a VainF checkpoint as numpy arrays.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: if it is not a PyTorch file of tensors.
    """
    path = Path(path)
    state, head_prefix = _state_dict(read_torch_file(path), path)
    tensors = {
        key: value.astype(np.float32)
        for key, value in state.items()
        if not key.endswith(BN_COUNTER)
    }
    return Checkpoint(path, tensors, head_prefix)


def _arch_layers(arch, checkpoint):
    architecture, backbone = ARCHS[arch]
    return layer_map(
        backbone=backbone,
        head_prefix=checkpoint.head_prefix,
        aux_head=checkpoint.has_aux,
        architecture=architecture,
    )


def _expected_keys(layers):
    return {
        f"{module}.{tensor}"
        for _, module, kind in layers
        for tensor, _ in TORCH_TENSORS[kind]
    }


def _listed(names):
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    more = (
        f" and {len(names) - _MAX_LISTED} more"
        if len(names) > _MAX_LISTED
        else ""
    )
    return f"{len(names)} [{shown}{more}]"


def _matching_arch(checkpoint):
    """The arch whose keys the checkpoint holds exactly, if any."""
    for arch in ARCHS:
        if _expected_keys(_arch_layers(arch, checkpoint)) == set(
            checkpoint.tensors
        ):
            return arch
    return None


def _check_keys(checkpoint, layers, arch):
    expected = _expected_keys(layers)
    present = set(checkpoint.tensors)
    missing, unexpected = expected - present, present - expected
    if not missing and not unexpected:
        return
    match = _matching_arch(checkpoint)
    hint = (
        f"the file matches --arch {match}."
        if match
        else f"expected a state dict of {arch} (torchvision's, or a VainF "
        "checkpoint); check --arch."
    )
    raise UserInputError(
        f"checkpoint {str(checkpoint.path)!r} does not fit {arch}: "
        f"{_listed(missing)} missing keys, {_listed(unexpected)} unexpected "
        f"keys; {hint}"
    )


def _as_keras(array, kind, tensor):
    # PyTorch convolutions are (out, in, kh, kw); Keras wants (kh, kw, in, out)
    # and, depthwise, (kh, kw, channels, 1) from PyTorch's (channels, 1, ...).
    if kind == "depthwise":
        return np.transpose(array, (2, 3, 0, 1))
    if kind not in ("bn", "named_bn") and tensor == "weight":
        return np.transpose(array, (2, 3, 1, 0))
    return array


def _keras_weights(model, checkpoint, layers):
    """{layer: [arrays]} in Keras order, or a list of shape mismatches."""
    weights, mismatched = {}, []
    for layer_name, module, kind in layers:
        layer = model.get_layer(layer_name)
        arrays = [
            checkpoint.tensors[f"{module}.{tensor}"]
            for tensor, _ in TORCH_TENSORS[kind]
        ]
        ranks = [rank for _, rank in TORCH_TENSORS[kind]]
        if [array.ndim for array in arrays] != ranks:
            got = [array.shape for array in arrays]
            mismatched.append(f"{module}: {got}, expected ranks {ranks}")
            continue
        arrays = [
            _as_keras(array, kind, tensor)
            for array, (tensor, _) in zip(
                arrays, TORCH_TENSORS[kind], strict=True
            )
        ]
        wanted = [tuple(w.shape) for w in layer.weights]
        got = [array.shape for array in arrays]
        if wanted != got:
            mismatched.append(f"{module}: {got} vs Keras {wanted}")
        weights[layer] = arrays
    return weights, mismatched


def native_output_stride(arch, checkpoint) -> int:
    """The stride a checkpoint was trained at: VainF trained at 16, and
    torchvision's MobileNetV3 models are dilated to 16, its ResNets to 8."""
    vainf = checkpoint.head_prefix == VAINF_HEAD or arch.startswith(
        "deeplabv3plus"
    )
    if vainf or ARCHS[arch][1] in MOBILENETS:
        return 16
    return 8


def convert_torchvision(
    checkpoint,
    *,
    arch: str = "deeplabv3_resnet50",
    output_stride: int | None = None,
    num_classes: int | None = None,
    class_names: tuple | None = None,
) -> keras.Model:
    """A `variant="torchvision"` model holding a checkpoint's weights.

    The weights do not depend on the output stride; by default the model
    runs at the checkpoint's own: 8 for torchvision's ResNet models, 16 for
    its MobileNetV3 ones and for VainF's. The ASPP rates follow the stride
    (12, 24, 36 at 8; 6, 12, 18 at 16) as in both sources. The model takes
    RGB images in [0, 255] and normalises them as torchvision does; it has
    the aux head when the checkpoint has one.

    Args:
        checkpoint: str or Path. A `.pth` state dict or VainF checkpoint.
        arch: str. One of ARCHS.
        output_stride: int or None. 8, 16 or 32; None: the checkpoint's
            own (`native_output_stride`).
        num_classes: int or None. Checked against the file; None takes it
            from the classifier.
        class_names: tuple of str or None. Stored in the model; None gives
            class_0, class_1, ...

    Returns:
        The `DeepLab` model, with every weight and BN statistic of the file.

    Raises:
        FileNotFoundError: if the checkpoint does not exist.
        UserInputError: for an unreadable file, another architecture (the
            missing, unexpected and mismatched keys are listed), or a
            `num_classes` that differs from the file's.
    """
    if arch not in ARCHS:
        raise UserInputError(
            f"arch={arch!r} is not supported; expected one of {tuple(ARCHS)}."
        )
    source = read_checkpoint(checkpoint)
    architecture, backbone = ARCHS[arch]
    layers = _arch_layers(arch, source)
    _check_keys(source, layers, arch)
    torch_module = {layer: module for layer, module, _ in layers}
    bias = source.tensors[f"{torch_module[HEAD_CLASSIFIER]}.bias"]
    file_classes = bias.shape[0] if bias.ndim == 1 else -1
    if num_classes is not None and num_classes != file_classes:
        raise UserInputError(
            f"num_classes={num_classes} does not match checkpoint "
            f"{str(source.path)!r}, whose classifier has {file_classes} "
            "classes; omit --num-classes or pass the right number."
        )
    if file_classes < 1:
        raise UserInputError(
            f"checkpoint {str(source.path)!r} has a classifier bias of shape "
            f"{bias.shape}; expected one value per class."
        )
    spec = ModelSpec(
        architecture=architecture,
        num_classes=file_classes,
        backbone=backbone,
        output_stride=output_stride or native_output_stride(arch, source),
        variant="torchvision",
        aux_head=source.has_aux,
        class_names=None if class_names is None else tuple(class_names),
    )
    model = build_model(spec)
    weights, mismatched = _keras_weights(model, source, layers)
    if mismatched:
        raise UserInputError(
            f"checkpoint {str(source.path)!r} does not fit {arch}: "
            f"{_listed(mismatched)} tensors with other shapes."
        )
    unmapped = {layer.name for layer in model.layers if layer.weights}
    unmapped -= {layer.name for layer in weights}
    assert not unmapped, f"layers without a torch counterpart: {unmapped}"
    for layer, arrays in weights.items():
        layer.set_weights(arrays)
    return model
