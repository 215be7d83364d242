"""Exporters: SavedModel for TF Serving, TFLite, ONNX, and the parity check.

The TFLite/ONNX/parity submodules need the `export` extra (tf2onnx, onnx,
onnxruntime, ai-edge-litert); importing this package does not. Names load
lazily so that `keras_deeplab.export.runtimes` (ONNX Runtime and LiteRT
sessions) can be used on a machine, or in a process, without TensorFlow.
"""

import importlib

__all__ = ["build_archive", "export_saved_model"]


def __getattr__(name):
    if name in __all__:
        module = importlib.import_module("keras_deeplab.export.saved_model")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
