"""The README demo: model report and a segmented synthetic image."""

from pathlib import Path

import numpy as np
from PIL import Image

from keras_deeplab.backbones.resnet import OUTPUT_STRIDES
from keras_deeplab.complexity import model_macs
from keras_deeplab.data.synthetic import synthetic_sample
from keras_deeplab.models import DeepLabV3
from keras_deeplab.visualize import overlay

REPORT_IMAGE_SIZE = 513  # the paper's crop size; GMACs are quoted at it


def model_report(num_classes: int = 21, *, image_size: int = REPORT_IMAGE_SIZE):
    """Parameters and forward GMACs of DeepLabV3-ResNet50 per output stride.

    Returns:
        List of dicts with keys output_stride, params, trainable_params,
        aux_params (with the aux FCN head) and gmacs (per image).
    """
    rows = []
    for output_stride in OUTPUT_STRIDES:
        model = DeepLabV3(
            num_classes,
            output_stride=output_stride,
            input_shape=(image_size, image_size, 3),
        )
        with_aux = DeepLabV3(
            num_classes, output_stride=output_stride, aux_head=True
        )
        rows.append(
            {
                "output_stride": output_stride,
                "params": model.count_params(),
                "trainable_params": sum(
                    int(np.prod(w.shape)) for w in model.trainable_weights
                ),
                "aux_params": with_aux.count_params(),
                "gmacs": model_macs(model) / 1e9,
            }
        )
    return rows


def format_report(rows, *, image_size: int = REPORT_IMAGE_SIZE) -> str:
    """One line per output stride, e.g. for the demo and the README."""
    lines = []
    for row in rows:
        lines.append(
            f"DeepLabV3-ResNet50 OS{row['output_stride']}: "
            f"{row['params']:,} params ({row['trainable_params']:,} "
            f"trainable; {row['aux_params']:,} with aux head), "
            f"{row['gmacs']:.1f} GMACs at {image_size}x{image_size}"
        )
    return "\n".join(lines)


def segment_example(model, *, out_dir: Path, size: int, seed: int = 0):
    """Segments one synthetic image with `model` and writes an overlay PNG."""
    image, _ = synthetic_sample(0, size=size, seed=seed)
    logits = model.predict(image[None], verbose=0)
    mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "overlay.png"
    Image.fromarray(np.concatenate([image, overlay(image, mask)], 1)).save(path)
    return path
