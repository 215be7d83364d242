"""Models derived from a built one: the inference model (logits only), the
export model (float32), another inference precision, another output stride.

Each returns a new model holding the same weights; none changes its input.
"""

import dataclasses

import keras

from keras_deeplab.models.deeplab import (
    FLOAT32_LAYERS,
    DeepLab,
    default_name,
    spec_of,
)
from keras_deeplab.spec import INFERENCE_PRECISIONS, MAIN_OUTPUT, ModelSpec
from keras_deeplab.utils.errors import UserInputError


def inference_model(model) -> keras.Model:
    """The model that returns the segmentation logits tensor, and only that.

    A model built with `aux_head=True` returns {"logits", "aux_logits"} for
    training; every load and export boundary calls this once, so everything
    after it sees one float32 logits tensor. For a `DeepLab` the result is a
    `DeepLab` of the same spec without the aux head, holding the same
    weights (copied); a plain functional model gets a view of its main
    output.
    """
    if not isinstance(model.output, dict):
        return model
    spec = spec_of(model)
    if spec is None:
        return keras.Model(
            model.input, model.output[MAIN_OUTPUT], name=model.name
        )
    main = DeepLab(
        dataclasses.replace(spec, aux_head=False),
        image_shape=tuple(model.input.shape[1:]),
        name=model.name,
    )
    copy_weights_by_name(model, main)
    return main


def copy_weights_by_name(source, target):
    """Sets every weighted layer of `target` from the same-named layer of
    `source` (which has them all, with the same shapes)."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def with_precision(model, precision: str) -> keras.Model:
    """The same model computing in "bfloat16" (or "float32"), for inference.

    Every layer but the input normalisation and the logits (FLOAT32_LAYERS)
    runs under the `mixed_bfloat16` policy: weights stay float32, compute is
    bf16, the logits come back float32. Worth it on CPUs with AVX512_BF16 or
    AMX and on accelerators; elsewhere bf16 is emulated and slower.

    Args:
        model: a segmentation keras.Model.
        precision: str. One of INFERENCE_PRECISIONS.

    Returns:
        A new model with copies of the weights, or `model` itself when it
        already computes in `precision` (float32 also undoes a mixed
        precision the model was built or trained under).
    """
    if precision not in INFERENCE_PRECISIONS:
        raise UserInputError(
            f"precision={precision!r} is not supported; expected one of "
            f"{INFERENCE_PRECISIONS}."
        )
    policy = keras.dtype_policies.DTypePolicy(
        "float32" if precision == "float32" else "mixed_bfloat16"
    )
    if precision == "float32" and all(
        layer.dtype_policy.name == "float32" for layer in model.layers
    ):
        return model

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name not in FLOAT32_LAYERS:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    if spec_of(model) is not None:
        clone.spec = spec_of(model)
    return clone


def export_model(model) -> keras.Model:
    """What every exporter converts: the float32 `inference_model`.

    A model built or trained under mixed precision exports in float32 (the
    TFLite converter never finishes on its bfloat16 graph).
    """
    return with_precision(inference_model(model), "float32")


def with_output_stride(model, output_stride: int) -> DeepLab:
    """The same trained weights in a model of another output stride.

    Dilation changes no weight shape, so a model trained at output stride 16
    can be evaluated at 8 (denser features, ~3x the compute; +1-1.5 mIoU in
    the paper). Explicit atrous rates are scaled with the stride (6, 12, 18
    at 16 become 12, 24, 36 at 8); unset rates follow the stride anyway.

    Args:
        model: a `DeepLab` model (or its `inference_model`).
        output_stride: int. 8, 16 or 32.
    """
    spec = _require_spec(model, "with_output_stride")
    rates = spec.atrous_rates
    if rates is not None:
        scale = spec.output_stride / output_stride
        rates = tuple(max(1, int(rate * scale)) for rate in rates)
    moved = dataclasses.replace(
        spec, output_stride=output_stride, atrous_rates=rates
    )
    # A default name says the stride: it follows; a chosen one stays.
    name = default_name(moved) if model.name == default_name(spec) else None
    rebuilt = DeepLab(
        moved,
        image_shape=tuple(model.input.shape[1:]),
        name=name or model.name,
    )
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _require_spec(model, what) -> ModelSpec:
    spec = spec_of(model)
    if spec is None:
        raise UserInputError(
            f"{what} needs a model built by keras_deeplab >= 0.3, which "
            f"records its ModelSpec; {model.name!r} has none (a file of an "
            "earlier release). Rebuild it with kd.DeepLabV3(...) and "
            "model.load_weights, then save it again."
        )
    return spec
