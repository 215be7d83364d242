"""Exporters: SavedModel for TF Serving, TFLite, ONNX, and their verification.

`export(model, fmt, out_dir, ...)` writes one artefact and `export_all` every
format, in one layout (`artefacts`); `verify` checks them against Keras.
TFLite and ONNX need the `export` extra (tf2onnx, onnx, onnxruntime,
ai-edge-litert) only when used. Names load lazily so that
`keras_deeplab.export.runtimes` (ONNX Runtime and LiteRT sessions) can be
used on a machine, or in a process, without TensorFlow.
"""

from keras_deeplab.lazy import lazy_attributes

_ARTEFACTS = "keras_deeplab.export.artefacts"
__all__ = ["artefact_paths", "export", "export_all"]
__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, _ARTEFACTS))
