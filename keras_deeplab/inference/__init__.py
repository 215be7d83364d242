"""Inference on images of any size: class probabilities with multi-scale and
flip averaging (`probabilities`), sliding-window tiling for images too large
to run whole (`tiling`), and segmenting files on disk (`predict`)."""

from keras_deeplab.utils.lazy import lazy_attributes

_PUBLIC = {
    "predict_probabilities": "keras_deeplab.inference.probabilities",
    "sliding_window_predict": "keras_deeplab.inference.tiling",
    "segment_files": "keras_deeplab.inference.predict",
}
__all__ = list(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
