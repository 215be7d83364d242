"""Inference on images of any size: class probabilities with multi-scale and
flip averaging (`probabilities`), sliding-window tiling for images too large
to run whole (`tiling`), segmenting files on disk (`predict`), rasters
(`raster`), and jobs over many files on Beam or Ray (`batch`: the model
calls every driver shares; `jobs`: inputs, outputs, manifest; `engines`)."""

from keras_deeplab.utils.lazy import lazy_attributes

_PUBLIC = {
    "predict_probabilities": "keras_deeplab.inference.probabilities",
    "sliding_window_predict": "keras_deeplab.inference.tiling",
    "segment_files": "keras_deeplab.inference.predict",
    "segment_images": "keras_deeplab.inference.batch",
    "InferenceOptions": "keras_deeplab.inference.batch",
}
__all__ = list(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
