"""The README demo: train on synthetic data, evaluate, draw, report."""

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np

from keras_deeplab.atomic import atomic_write_text
from keras_deeplab.backbones.resnet import OUTPUT_STRIDES
from keras_deeplab.complexity import model_macs
from keras_deeplab.config import load_config
from keras_deeplab.data.pipeline import make_dataset
from keras_deeplab.data.synthetic import CLASS_NAMES
from keras_deeplab.export.parity import (
    export_all,
    format_table,
    representative_images,
    save_report,
    verification_batch,
    verify_exports,
)
from keras_deeplab.figures import (
    comparison_rows,
    save_figure,
    training_curves,
)
from keras_deeplab.models import DeepLabV3, load_trained_model
from keras_deeplab.training.evaluate import (
    evaluate_model,
    predict_probabilities,
)
from keras_deeplab.training.fit import BEST_MODEL, HISTORY_FILE, train
from keras_deeplab.visualize import save_png

REPORT_IMAGE_SIZE = 513  # the paper's crop size; GMACs are quoted at it
_OVERLAY_ROWS = 6


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
    return "\n".join(
        f"DeepLabV3-ResNet50 OS{row['output_stride']}: {row['params']:,} "
        f"params ({row['trainable_params']:,} trainable; "
        f"{row['aux_params']:,} with aux head), {row['gmacs']:.1f} GMACs at "
        f"{image_size}x{image_size}"
        for row in rows
    )


def save_overlay_grid(model, dataset, path, *, rows=_OVERLAY_ROWS):
    """Image | ground truth | prediction overlay, one row per val image."""
    images, masks = next(iter(dataset.unbatch().batch(rows)))
    images = np.asarray(images)
    predictions = np.argmax(predict_probabilities(model, images), axis=-1)
    return save_png(path, comparison_rows(images, masks, predictions))


def read_history(history_csv) -> dict:
    """The CSVLogger file as {metric: [value per epoch]}."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def save_training_curves(history_csv, path):
    """Loss and val mIoU per epoch from the CSV log, as a PNG."""
    return save_figure(training_curves(read_history(history_csv)), path)


def format_class_iou(per_class_iou, names=CLASS_NAMES) -> str:
    return "\n".join(
        f"  {name:<12} {'-' if iou is None else f'{iou:.3f}'}"
        for name, iou in zip(names, per_class_iou, strict=True)
    )


def _export_and_verify(model, config, export_dir):
    """Every export format, then the parity table against Keras."""
    size = config.export_size
    paths = export_all(
        model,
        export_dir,
        size=size,
        overwrite=True,
        representative_images=representative_images(config, size=size),
    )
    print(
        "exported:\n"
        + "\n".join(f"  {name}: {path}" for name, path in paths.items())
    )
    images, masks = verification_batch(config, size=size)
    rows = verify_exports(
        model, export_dir, images, masks, num_classes=config.num_classes
    )
    print(format_table(rows))
    save_report(rows, export_dir)
    return rows


def run_demo(out_dir, *, overrides=(), resume=False):
    """Trains the `demo` preset, evaluates it and writes pictures.

    Writes to `out_dir`: train/ (checkpoints, logs), overlays.png,
    training_curves.png, export/ (SavedModel, TFLite, ONNX, parity.json)
    and metrics.json.

    Returns:
        The evaluation dict (mean_iou, pixel_accuracy, per_class_iou).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    config = load_config("demo", overrides)
    print(format_report(model_report()))  # the 21-class VOC model of README
    print(f"resolved config:\n{config.to_json()}", flush=True)
    work_dir = out_dir / "train"
    if work_dir.exists() and not resume:
        shutil.rmtree(work_dir)  # the demo's own output from a previous run
    train(config, work_dir, resume=resume)
    model = load_trained_model(work_dir / BEST_MODEL)
    val = make_dataset(config, config.val_split, training=False)
    results = evaluate_model(model, val, num_classes=config.num_classes)
    overlays = save_overlay_grid(model, val, out_dir / "overlays.png")
    curves = save_training_curves(
        work_dir / HISTORY_FILE, out_dir / "training_curves.png"
    )
    print(f"per-class IoU:\n{format_class_iou(results['per_class_iou'])}")
    print(f"wrote {overlays}, {curves}")
    results["parity"] = _export_and_verify(model, config, out_dir / "export")
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    atomic_write_text(
        out_dir / "metrics.json", json.dumps(results, indent=2) + "\n"
    )
    print(
        f"val mIoU {results['mean_iou']:.3f}, pixel accuracy "
        f"{results['pixel_accuracy']:.3f}, demo wall time "
        f"{results['wall_time_s']:.0f} s; wrote {out_dir / 'metrics.json'}"
    )
    return results
