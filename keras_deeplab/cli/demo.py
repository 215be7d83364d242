"""The README demo: train on synthetic data, evaluate, draw, export, verify."""

import json
import time
from pathlib import Path

import numpy as np

from keras_deeplab.config import load_config
from keras_deeplab.data.configured import (
    calibration_images,
    split_dataset,
    validation_batch,
)
from keras_deeplab.evaluation.evaluate import evaluate_model, format_results
from keras_deeplab.export.export_all import export_all
from keras_deeplab.export.verify import (
    format_table,
    save_report,
    verify_exports,
)
from keras_deeplab.inference.probabilities import predict_probabilities
from keras_deeplab.loading import load_trained_model, model_from_config
from keras_deeplab.models.complexity import describe
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.training.fit import train
from keras_deeplab.training.workdir import (
    BEST_MODEL,
    CONFIG_FILE,
    HISTORY_FILE,
    finished_run,
    read_history,
)
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import counted
from keras_deeplab.visualize.figures import (
    prediction_grid,
    save_figure,
    training_curves,
)

_OVERLAY_ROWS = 6
PARITY_IMAGES = 16
# What the demo writes into its --out folder.
TRAIN_DIR = "train"
OVERLAYS = "overlays.png"
CURVES = "training_curves.png"
EXPORT_DIR = "export"
METRICS = "metrics.json"


def save_overlay_grid(model, dataset, path, *, rows=_OVERLAY_ROWS):
    """Image, label, prediction and error map with column titles and a
    class legend, one row per val image (`figures.prediction_grid`)."""
    images, masks = next(iter(dataset.unbatch().batch(rows)))
    images = np.asarray(images)
    predictions = np.argmax(predict_probabilities(model, images), axis=-1)
    grid = prediction_grid(images, masks, predictions, class_names(model))
    return save_figure(grid, path)


def _export_and_verify(model, config, export_dir):
    """Every export format, then the parity table against Keras (with a
    Keras bfloat16 row); returns (rows, the number of images scored)."""
    size = config.export_size
    paths = export_all(
        model,
        export_dir,
        size=size,
        overwrite=True,
        representative_images=calibration_images(config, size=size),
        model_name=config.model_name,
        log=print,
    )
    print(f"exported {len(paths)} artefacts to {export_dir}")
    images, masks = validation_batch(config, size=size, count=PARITY_IMAGES)
    rows = verify_exports(
        model,
        export_dir,
        images,
        masks,
        num_classes=config.num_classes,
        precisions=("bfloat16",),
    )
    print(format_table(rows))
    save_report(rows, export_dir)
    return rows, len(images)


def finished_training(config, work_dir, *, resume) -> bool:
    """Whether `--resume` finds this config's training already finished in
    `work_dir` (a later step failed), so the demo goes on from its models.

    Raises:
        UserInputError: if the finished run there is of another config.
    """
    work_dir = Path(work_dir)
    if not (resume and finished_run(work_dir)):
        return False
    if load_config(str(work_dir / CONFIG_FILE)).to_json() != config.to_json():
        raise UserInputError(
            f"--resume: {str(work_dir)!r} holds a finished training of "
            "another config; drop --resume to train again, or choose another "
            "--out."
        )
    print(
        f"training finished earlier in {work_dir}; evaluating and exporting it",
        flush=True,
    )
    return True


def run_demo(out_dir, *, preset="demo", overrides=(), resume=False):
    """Trains a config preset ("demo", or "mobile" for LR-ASPP on
    MobileNetV3), evaluates it, exports and verifies it.

    Writes to `out_dir`: train/ (checkpoints, logs), overlays.png,
    training_curves.png, export/ (SavedModel, TFLite, ONNX, parity.json)
    and metrics.json.

    Returns:
        The evaluation dict (mean_iou, pixel_accuracy, per_class_iou,
        parity, wall_time_s).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    config = load_config(preset, overrides)
    size = (config.crop_size, config.crop_size, 3)
    print(describe(model_from_config(config, input_shape=size)), flush=True)
    work_dir = out_dir / TRAIN_DIR
    if not finished_training(config, work_dir, resume=resume):
        train(config, work_dir, resume=resume, overwrite=not resume)
    model = load_trained_model(work_dir / BEST_MODEL)
    val = split_dataset(config, config.val_split, training=False)
    results = evaluate_model(model, val, num_classes=config.num_classes)
    overlays = save_overlay_grid(model, val, out_dir / OVERLAYS)
    curves = save_figure(
        training_curves(read_history(work_dir / HISTORY_FILE)),
        out_dir / CURVES,
    )
    print(f"evaluation of {work_dir / BEST_MODEL} on the whole val split:")
    print(format_results(results))
    print(f"wrote {overlays}, {curves}")
    results["parity"], parity_images = _export_and_verify(
        model, config, out_dir / EXPORT_DIR
    )
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out_dir / METRICS, json.dumps(results, indent=2) + "\n")
    print(
        f"val mIoU {results['mean_iou']:.3f}, pixel accuracy "
        f"{results['pixel_accuracy']:.3f} (the whole val split; the parity "
        f"table scores its {counted(parity_images, 'image')} only), demo "
        f"wall time {results['wall_time_s']:.0f} s; wrote {out_dir / METRICS}"
    )
    return results
