"""torchvision and VainF DeepLabV3 / DeepLabV3+ checkpoints -> Keras models.

Reads a PyTorch state dict with `torch.load(..., weights_only=True)` (tensors
and plain containers only; nothing is unpickled that could run code), maps
every tensor by name onto `DeepLabV3(variant="torchvision")` (or
`DeepLabV3Plus(variant="torchvision")`) and refuses,
listing them, any missing, unexpected or shape-mismatched keys. torch is
needed for reading the file only (the `torch` extra); torchvision is not.

Accepted files: the state dict of torchvision's `deeplabv3_resnet50/101`
(`torch.save(model.state_dict(), path)`, as torchvision publishes them,
aux head included when present) and VainF/DeepLabV3Plus-Pytorch checkpoints
(`{"model_state": ..., "optimizer_state": ..., ...}`; a DeepLabV3 head under
`classifier.classifier.`, a DeepLabV3+ head as `classifier.project`,
`classifier.aspp` and `classifier.classifier`).
"""

import dataclasses
import pickle
from pathlib import Path

import keras
import numpy as np

from keras_deeplab.backbones.resnet import STAGE_BLOCKS, STAGE_NAMES, block_name
from keras_deeplab.errors import UserInputError
from keras_deeplab.heads.aspp import OS16_ATROUS_RATES
from keras_deeplab.models import BACKBONES, BUILDERS

# --arch -> (architecture, backbone); V3+ names are VainF's.
ARCHS = {
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
    "deeplabv3plus_resnet50": ("deeplabv3plus", "resnet50"),
    "deeplabv3plus_resnet101": ("deeplabv3plus", "resnet101"),
}
# Tensors of each kind of layer, in the order Keras keeps its weights.
_TORCH_TENSORS = {
    "conv": ("weight",),
    "conv_bias": ("weight", "bias"),
    "bn": ("weight", "bias", "running_mean", "running_var"),
}
_BN_COUNTER = "num_batches_tracked"  # PyTorch bookkeeping, no Keras weight
_VAINF_STATE = "model_state"
_DATA_PARALLEL_PREFIX = "module."
_TORCHVISION_HEAD = "classifier."
_VAINF_HEAD = "classifier.classifier."
_VAINF_PLUS_HEAD = "classifier."
_AUX_HEAD = "aux_classifier."
_MAX_LISTED = 6


@dataclasses.dataclass(frozen=True)
class _Checkpoint:
    """The tensors of a checkpoint file and where its head lives."""

    path: Path
    tensors: dict  # torch key -> float32 numpy array
    head_prefix: str  # torchvision "classifier." or VainF's nesting

    @property
    def has_aux(self) -> bool:
        return any(key.startswith(_AUX_HEAD) for key in self.tensors)


def _numpy_scalar_globals():
    """Globals a checkpoint needs to hold numpy scalars (VainF's best_score).

    They only rebuild numpy numbers and dtypes from bytes.
    """
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(kind)) for kind in ("float64", "float32", "int64")]
    # Files written under numpy 1.x name the function numpy.core...
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _load(path):
    import torch  # the `torch` extra

    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    # What torch.load raises for a truncated zip (RuntimeError), an empty
    # file (EOFError), other bytes (KeyError, UnpicklingError) and objects
    # that weights_only refuses (UnpicklingError).
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        pickle.UnpicklingError,
    ) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserInputError(
            f"checkpoint {str(path)!r} is not a readable PyTorch state dict "
            f"({type(err).__name__}{': ' + reason[:200] if reason else ''}); "
            "expected a file written by torch.save(model.state_dict(), path)."
        ) from err


def read_checkpoint(path) -> _Checkpoint:
    """Loads a torchvision state dict or a VainF checkpoint as numpy arrays.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: if it is not a PyTorch file of tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; expected a .pth file of "
            "torchvision's deeplabv3_resnet50/101 or a VainF checkpoint."
        )
    loaded = _load(path)
    head_prefix = _TORCHVISION_HEAD
    if isinstance(loaded, dict) and _VAINF_STATE in loaded:
        loaded, head_prefix = loaded[_VAINF_STATE], _VAINF_HEAD
    if not isinstance(loaded, dict) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise UserInputError(
            f"checkpoint {str(path)!r} holds a {type(loaded).__name__} that "
            "is not a state dict of tensors; expected torch.save(model."
            "state_dict(), path) or a VainF checkpoint with 'model_state'."
        )
    if loaded and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in loaded):
        loaded = {
            key.removeprefix(_DATA_PARALLEL_PREFIX): value
            for key, value in loaded.items()
        }
    tensors = {
        key: value.detach().to(torch.float32).numpy()
        for key, value in loaded.items()
        if not key.endswith(_BN_COUNTER)
    }
    return _Checkpoint(path, tensors, head_prefix)


def _backbone_layers(depth):
    """(Keras layer, torch module, kind) of a torchvision ResNet backbone."""
    yield "conv1_conv", "backbone.conv1", "conv"
    yield "conv1_bn", "backbone.bn1", "bn"
    stages = zip(STAGE_NAMES, STAGE_BLOCKS[depth], strict=True)
    for stage_index, (stage, blocks) in enumerate(stages, start=1):
        for index in range(blocks):
            keras_block = block_name(stage, index)
            torch_block = f"backbone.layer{stage_index}.{index}"
            for unit in (1, 2, 3):
                yield (
                    f"{keras_block}_{unit}_conv",
                    f"{torch_block}.conv{unit}",
                    "conv",
                )
                yield (
                    f"{keras_block}_{unit}_bn",
                    f"{torch_block}.bn{unit}",
                    "bn",
                )
            if index == 0:
                downsample = f"{torch_block}.downsample"
                yield f"{keras_block}_0_conv", f"{downsample}.0", "conv"
                yield f"{keras_block}_0_bn", f"{downsample}.1", "bn"


def _aspp_layers(prefix):
    """torchvision's ASPP module (VainF's is the same) under `prefix`."""
    branches = f"{prefix}convs"
    yield "aspp_1x1_conv", f"{branches}.0.0", "conv"
    yield "aspp_1x1_bn", f"{branches}.0.1", "bn"
    for index in range(1, len(OS16_ATROUS_RATES) + 1):
        yield f"aspp_atrous{index}_conv", f"{branches}.{index}.0", "conv"
        yield f"aspp_atrous{index}_bn", f"{branches}.{index}.1", "bn"
    pooling = f"{branches}.{len(OS16_ATROUS_RATES) + 1}"  # 0 is the pool
    yield "aspp_pool_conv", f"{pooling}.1", "conv"
    yield "aspp_pool_bn", f"{pooling}.2", "bn"
    yield "aspp_project_conv", f"{prefix}project.0", "conv"
    yield "aspp_project_bn", f"{prefix}project.1", "bn"


def _head_layers(prefix):
    """torchvision's DeepLabHead: ASPP, 3x3 conv + BN, 1x1 classifier."""
    yield from _aspp_layers(f"{prefix}0.")
    yield "head_conv_conv", f"{prefix}1", "conv"
    yield "head_conv_bn", f"{prefix}2", "bn"
    yield "head_classifier", f"{prefix}4", "conv_bias"


def _plus_head_layers(prefix=_VAINF_PLUS_HEAD):
    """VainF's DeepLabHeadV3Plus: 1x1 48 projection of layer1, ASPP, one
    3x3 conv + BN on the concatenation, 1x1 classifier."""
    yield from _aspp_layers(f"{prefix}aspp.")
    yield "decoder_low_level_conv", f"{prefix}project.0", "conv"
    yield "decoder_low_level_bn", f"{prefix}project.1", "bn"
    yield "decoder_conv1_conv", f"{prefix}classifier.0", "conv"
    yield "decoder_conv1_bn", f"{prefix}classifier.1", "bn"
    yield "head_classifier", f"{prefix}classifier.3", "conv_bias"


def _aux_layers():
    """torchvision's FCNHead on layer3: 3x3 conv + BN, 1x1 classifier."""
    yield "aux_head_conv", f"{_AUX_HEAD}0", "conv"
    yield "aux_head_bn", f"{_AUX_HEAD}1", "bn"
    yield "aux_classifier", f"{_AUX_HEAD}4", "conv_bias"


def layer_map(
    *,
    depth,
    head_prefix=_TORCHVISION_HEAD,
    aux_head=False,
    architecture="deeplabv3",
):
    """[(Keras layer name, torch module name, kind)] of one architecture."""
    head = (
        _plus_head_layers()
        if architecture == "deeplabv3plus"
        else _head_layers(head_prefix)
    )
    layers = [*_backbone_layers(depth), *head]
    return layers + (list(_aux_layers()) if aux_head else [])


def _arch_layers(arch, checkpoint):
    architecture, backbone = ARCHS[arch]
    return layer_map(
        depth=BACKBONES[backbone],
        head_prefix=checkpoint.head_prefix,
        aux_head=checkpoint.has_aux,
        architecture=architecture,
    )


def _expected_keys(layers):
    return {
        f"{module}.{tensor}"
        for _, module, kind in layers
        for tensor in _TORCH_TENSORS[kind]
    }


def _as_keras(array, kind, tensor):
    # PyTorch convolutions are (out, in, kh, kw); Keras wants (kh, kw, in, out).
    if kind != "bn" and tensor == "weight":
        return np.transpose(array, (2, 3, 1, 0))
    return array


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


def _keras_weights(model, checkpoint, layers):
    """{layer: [arrays]} in Keras order, or a list of shape mismatches."""
    weights, mismatched = {}, []
    for layer_name, module, kind in layers:
        layer = model.get_layer(layer_name)
        arrays = [
            _as_keras(checkpoint.tensors[f"{module}.{tensor}"], kind, tensor)
            for tensor in _TORCH_TENSORS[kind]
        ]
        wanted = [tuple(w.shape) for w in layer.weights]
        got = [array.shape for array in arrays]
        if wanted != got:
            mismatched.append(f"{module}: {got} vs Keras {wanted}")
        weights[layer] = arrays
    return weights, mismatched


def convert_torchvision(
    checkpoint,
    *,
    arch: str = "deeplabv3_resnet50",
    output_stride: int = 8,
    num_classes: int | None = None,
) -> keras.Model:
    """Builds `DeepLabV3(variant="torchvision")`, or `DeepLabV3Plus` for the
    `deeplabv3plus_*` archs, holding a checkpoint's weights.

    The weights do not depend on the output stride: torchvision's models run
    at 8, VainF's were trained at 16 (pass `output_stride=16` for them); the
    ASPP rates follow the stride (12, 24, 36 at 8; 6, 12, 18 at 16) as in
    both sources. The model takes RGB images in [0, 255] and normalises them
    as torchvision does; it has the aux head when the checkpoint has one.

    Args:
        checkpoint: str or Path. A `.pth` state dict or VainF checkpoint.
        arch: str. "deeplabv3_resnet50|101" (torchvision or VainF) or
            "deeplabv3plus_resnet50|101" (VainF).
        output_stride: int. 8 or 16 (32 also works). Defaults to 8.
        num_classes: int or None. Checked against the file; None takes it
            from the classifier.

    Returns:
        The Keras model, with every weight and BN statistic of the file.

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
    classifier_bias = f"{torch_module['head_classifier']}.bias"
    file_classes = source.tensors[classifier_bias].shape[0]
    if num_classes is not None and num_classes != file_classes:
        raise UserInputError(
            f"num_classes={num_classes} does not match checkpoint "
            f"{str(source.path)!r}, whose classifier has {file_classes} "
            "classes; omit --num-classes or pass the right number."
        )
    model = BUILDERS[architecture](
        file_classes,
        backbone=backbone,
        output_stride=output_stride,
        variant="torchvision",
        aux_head=source.has_aux,
    )
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
