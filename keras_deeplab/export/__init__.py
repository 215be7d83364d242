"""Exporters: SavedModel for TF Serving, TFLite, ONNX, and the parity check.

The TFLite/ONNX/parity submodules need the `export` extra (tf2onnx, onnx,
onnxruntime, ai-edge-litert); importing this package does not.
"""

from keras_deeplab.export.saved_model import build_archive, export_saved_model

__all__ = ["build_archive", "export_saved_model"]
