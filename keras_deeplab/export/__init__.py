"""Exporters: SavedModel for TF Serving (TFLite and ONNX: issue 5)."""

from keras_deeplab.export.saved_model import build_archive, export_saved_model

__all__ = ["build_archive", "export_saved_model"]
