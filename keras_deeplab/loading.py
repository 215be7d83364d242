"""Models from a config or a file: building, loading, initialising.

`from_preset` is the one-line way to a pretrained model (a preset name, a
checkpoint path or URL, or a `.keras` file); `model_from_config` builds what
a DeepLabConfig describes; `load_trained_model` loads any of those or a
`.weights.h5` file with its config, for inference; `initialize_from` starts
a model from another's weights by name.
"""

import dataclasses
from pathlib import Path

import keras

from keras_deeplab.heads.aspp import (
    AUX_CLASSIFIER,
    AUX_HEAD,
    DECODER_PREFIX,
    HEAD_CLASSIFIER,
)
from keras_deeplab.heads.lraspp import LOW_CLASSIFIER
from keras_deeplab.layers import bn_name, conv_name
from keras_deeplab.models.deeplab import build_model, spec_of
from keras_deeplab.models.derived import inference_model, with_output_stride
from keras_deeplab.models.files import (
    existing_model_file,
    load_model_file,
    load_weights,
)
from keras_deeplab.pretrained import (
    CHECKPOINT_SUFFIXES,
    checkpoint_model_file,
    get_preset,
    is_preset,
    is_url,
    looks_like_a_name,
    preset_model_file,
    url_download_path,
)
from keras_deeplab.pretrained.download import (
    check_sha256,
    download,
    file_sha256,
)
from keras_deeplab.spec import ModelSpec
from keras_deeplab.utils.errors import UserInputError


def _model_file(source, *, arch, sha256, output_stride, class_names) -> Path:
    """The `.keras` file a preset name, URL or local path stands for."""
    text = str(source)
    if is_preset(text):
        if class_names is not None:
            raise UserInputError(
                f"class_names= does not apply to the preset {text!r}: a "
                "preset keeps its own class names. To train on other "
                "classes, pass num_classes= (the classifier starts afresh)."
            )
        return preset_model_file(text, sha256=sha256)
    suffix = Path(text.split("?")[0]).suffix
    if suffix == ".keras" and is_url(text):
        return download(text, url_download_path(text), sha256=sha256)
    if suffix == ".keras":
        return _checked(existing_model_file(text), sha256)
    if suffix in CHECKPOINT_SUFFIXES or is_url(text):
        if arch is None:
            raise UserInputError(
                f"{text!r} is a PyTorch checkpoint: pass arch= (one of "
                "deeplabv3_resnet50, deeplabv3plus_resnet50, ...) to say "
                "which model it holds."
            )
        return checkpoint_model_file(
            text,
            arch=arch,
            sha256=sha256,
            output_stride=output_stride,
            class_names=class_names,
        )
    if looks_like_a_name(text) and not Path(text).exists():
        get_preset(text)  # raises with the closest names
    return _checked(existing_model_file(text), sha256)


def _checked(path, sha256):
    """`path`, after checking its SHA-256 when one is given."""
    expected = check_sha256(sha256)
    if expected is not None:
        actual = file_sha256(path)
        if not actual.startswith(expected):
            raise UserInputError(
                f"model file {str(path)!r} has SHA-256 {actual}, but "
                f"{expected} was expected; check the file and the hash."
            )
    return path


def from_preset(
    source,
    *,
    arch: str | None = None,
    sha256: str | None = None,
    num_classes: int | None = None,
    output_stride: int | None = None,
    class_names=None,
) -> keras.Model:
    """A ready segmentation model from a preset, a checkpoint or a file.

    The first call downloads (verified) and converts into the cache
    (`$KERAS_DEEPLAB_CACHE`, else `~/.keras/keras_deeplab`); later calls
    load the converted `.keras` without network or PyTorch.

    Args:
        source: a preset name (`keras-deeplab presets`), a local `.pth`/`.pt`
            checkpoint or `.keras` file, or an http(s) URL of either.
        arch: str or None. The architecture of a checkpoint that is not a
            preset, e.g. "deeplabv3_resnet50" (`convert.ARCHS`).
        sha256: str or None. Expected SHA-256 (or a prefix of >= 8 hex
            digits) of the file. With a preset name: your own copy of that
            preset's layout (re-hosted or fine-tuned), which then keeps the
            preset's class names, stride and metadata
            (docs/pretrained.md, "Using your own checkpoint").
        num_classes: int or None. For fine-tuning on other classes: the
            classifier starts afresh with this many classes; every other
            layer keeps the pretrained weights.
        output_stride: int or None. Run at this stride (the weights do not
            depend on it); None keeps the preset's.
        class_names: sequence of str, or None. What a checkpoint's logits
            mean (with `arch=`); None gives `class_0`, `class_1`, ...

    Returns:
        A `DeepLab` returning float32 logits for RGB images in [0, 255],
        with its class names (`model.spec.names`); a checkpoint's aux head
        is left out.

    Raises:
        UserInputError: naming what is wrong (unknown preset, with the
            closest names; a failed download; a file of another arch).
        FileNotFoundError: for a path that does not exist.
    """
    path = _model_file(
        source,
        arch=arch,
        sha256=sha256,
        output_stride=output_stride,
        class_names=None if class_names is None else tuple(class_names),
    )
    model = inference_model(load_model_file(path))
    spec = spec_of(model)
    if output_stride is not None and output_stride != spec.output_stride:
        model = with_output_stride(model, output_stride)
    if num_classes is not None and num_classes != spec.num_classes:
        fresh = build_model(
            dataclasses.replace(
                spec_of(model), num_classes=num_classes, class_names=None
            )
        )
        print(initialize_from(fresh, path), flush=True)
        model = fresh
    return model


def model_from_config(config, *, input_shape=(None, None, 3)) -> keras.Model:
    """The model a DeepLabConfig describes, with its starting weights
    (`backbone_weights`, `init_weights`) and BN frozen if asked."""
    model = build_model(
        ModelSpec.of(config),
        input_shape=input_shape,
        backbone_weights=config.backbone_weights,
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
# classifiers when num_classes differs, the aux head when the source had none,
# a DeepLabV3+ decoder when the source is a DeepLabV3.
_NEW_WHEN_RESHAPED = (HEAD_CLASSIFIER, AUX_CLASSIFIER, LOW_CLASSIFIER)
_NEW_WHEN_ABSENT = (conv_name(AUX_HEAD), bn_name(AUX_HEAD), AUX_CLASSIFIER)


def _starts_afresh_when_absent(name):
    return name in _NEW_WHEN_ABSENT or name.startswith(DECODER_PREFIX)


def initialize_from(model, source) -> str:
    """Copies the weights of a trained `.keras` model (or a preset) into
    `model` by layer name.

    For fine-tuning a trained or converted model on other data: every
    weighted layer must exist in the source with the same shapes, except the
    classifiers, which start afresh when `num_classes` differs, and the aux
    head or the DeepLabV3+ decoder, which start afresh when the source has
    none (a V3+ can start from a trained V3). Nothing is copied unless all
    layers fit.

    Args:
        model: the keras.Model to initialise (same backbone and variant).
        source: str or Path. A `.keras` model file (loaded in safe mode) or
            a preset name (`keras-deeplab presets`).

    Returns:
        One line saying what was copied and what starts afresh.

    Raises:
        FileNotFoundError: if `source` is neither a file nor a preset.
        UserInputError: listing the layers that do not fit.
    """
    if is_preset(source):
        source = preset_model_file(source)
    path = existing_model_file(source)
    if path.suffix != ".keras":
        raise UserInputError(
            f"init_weights {str(path)!r} must be a .keras model file (e.g. "
            "from convert-torchvision or a run's best.keras) or a preset."
        )
    loaded = {layer.name: layer for layer in load_model_file(path).layers}
    pairs, fresh, problems = [], [], []
    for layer in (layer for layer in model.layers if layer.weights):
        counterpart = loaded.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if counterpart is None:
            starts_afresh = _starts_afresh_when_absent(layer.name)
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


def _is_named(text) -> bool:
    """A preset, URL or torch checkpoint: what `from_preset` loads."""
    return is_preset(text) or is_url(text) or text.endswith(CHECKPOINT_SUFFIXES)


def check_model_source(source) -> str:
    """`source` as `load_trained_model` will find it (a preset name or URL
    as it is, a file as an absolute path), without loading anything: for
    jobs whose workers load the model (`inference.engines`).

    Raises:
        FileNotFoundError: if it is neither a file nor a preset (naming the
            closest presets).
    """
    text = str(source)
    if _is_named(text) and not Path(text).is_file():
        return text
    if looks_like_a_name(text) and not Path(text).exists():
        get_preset(text)  # raises with the closest names
    return str(existing_model_file(text).resolve())


def load_trained_model(source, config=None) -> keras.Model:
    """A model for inference from a `.keras` file (safe mode), a
    `.weights.h5` file plus its config, or a preset name.

    Returns the `inference_model`: one logits output, even for a training
    checkpoint saved with its aux head.

    Args:
        source: str or Path. A `.keras` file, a `.weights.h5` file plus
            the `config` it was trained with, or a preset name.
        config: DeepLabConfig or None. Needed for `.weights.h5` only.

    Raises:
        FileNotFoundError: if `source` is neither a file nor a preset.
        UserInputError: for another suffix, or weights without a config.
    """
    text = str(source)
    if _is_named(text):
        return from_preset(text)
    path = Path(check_model_source(text))
    if path.suffix == ".keras":
        return inference_model(load_model_file(path))
    if path.name.endswith(".weights.h5") and config is not None:
        model = build_model(ModelSpec.of(config))
        load_weights(model, path)
        return inference_model(model)
    raise UserInputError(
        f"cannot load {str(path)!r}: expected a .keras file, a preset name, "
        "or a .weights.h5 file together with the CONFIG it was trained with."
    )
