"""Exporters: SavedModel for TF Serving, TFLite, ONNX, and their verification.

`export(model, fmt, out_dir, ...)` writes one artefact (`artefacts`) and
`export_all` every format (`export_all`), in one layout (`layout`); `verify`
checks them against Keras.
TFLite and ONNX need the `export` extra (tf2onnx, onnx, onnxruntime,
ai-edge-litert) only when used. Names load lazily so that
`keras_deeplab.export.runtimes` (ONNX Runtime and LiteRT sessions) can be
used on a machine, or in a process, without TensorFlow.
"""

from keras_deeplab.utils.lazy import lazy_attributes

_ARTEFACTS = "keras_deeplab.export.artefacts"
_PUBLIC = {
    "artefact_paths": _ARTEFACTS,
    "export": _ARTEFACTS,
    "export_all": "keras_deeplab.export.export_all",
}
__all__ = list(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
