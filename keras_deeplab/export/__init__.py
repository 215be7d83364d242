"""Exporters: SavedModel for TF Serving, TFLite, ONNX, and their verification.

`export(model, fmt, out_dir, ...)` writes one artefact and `export_all` every
format, in one layout (`artefacts`); `verify` checks them against Keras.
TFLite and ONNX need the `export` extra (tf2onnx, onnx, onnxruntime,
ai-edge-litert) only when used. Names load lazily so that
`keras_deeplab.export.runtimes` (ONNX Runtime and LiteRT sessions) can be
used on a machine, or in a process, without TensorFlow.
"""

import importlib

__all__ = ["artefact_paths", "export", "export_all"]


def __getattr__(name):
    if name in __all__:
        module = importlib.import_module("keras_deeplab.export.artefacts")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
