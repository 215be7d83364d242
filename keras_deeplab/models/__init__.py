"""The models: `deeplab` assembles DeepLabV3, DeepLabV3+ and LR-ASPP (the
one place backbone meets head), `builders` are the keyword builders users
call; `derived` makes the inference, precision and
output-stride variants of a built model; `files` loads and checks `.keras`
files; `complexity` counts parameters and MACs.

The public names below load on first use (importing `models.files` must not
build Keras layers).
"""

from keras_deeplab.utils.lazy import lazy_attributes

_DEEPLAB = "keras_deeplab.models.deeplab"
_BUILDERS = "keras_deeplab.models.builders"
_DERIVED = "keras_deeplab.models.derived"
_PUBLIC = {
    "DeepLab": _DEEPLAB,
    "DeepLabV3": _BUILDERS,
    "DeepLabV3Plus": _BUILDERS,
    "LRASPP": _BUILDERS,
    "build_model": _DEEPLAB,
    "class_names": _DEEPLAB,
    "spec_of": _DEEPLAB,
    "inference_model": _DERIVED,
    "with_output_stride": _DERIVED,
    "with_precision": _DERIVED,
}
__all__ = list(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
