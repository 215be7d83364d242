"""Export all formats into one folder and check each against Keras.

Layout written by `export_all` and read by `verify_exports`:

    <dir>/serving/<model_name>/<version>/   SavedModel (TF Serving)
    <dir>/tflite/deeplab_<quantize>_<size>.tflite, deeplab_none_dynamic.tflite
    <dir>/onnx/deeplab.onnx
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from keras_deeplab.atomic import atomic_file, atomic_write_text
from keras_deeplab.errors import UserInputError
from keras_deeplab.export.onnx import export_onnx
from keras_deeplab.export.runtimes import artefact_runner
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.tflite import QUANTIZATIONS, convert_tflite
from keras_deeplab.models import main_logits
from keras_deeplab.training.metrics import mean_iou

REPORT_FILE = "parity.json"


def tflite_name(quantize, size):
    return f"deeplab_{quantize}_{size or 'dynamic'}.tflite"


def export_all(
    model,
    out_dir,
    *,
    size,
    representative_images,
    model_name="deeplab",
    version=1,
    overwrite=False,
):
    """SavedModel, every TFLite variant and ONNX; returns {name: path}."""
    out_dir = Path(out_dir)
    paths = {
        "saved_model": export_saved_model(
            model,
            out_dir / "serving",
            model_name=model_name,
            version=version,
            overwrite=overwrite,
        )
    }
    variants = [(quantize, size) for quantize in QUANTIZATIONS]
    variants.append(("none", None))  # dynamic height/width
    for quantize, variant_size in variants:
        data = convert_tflite(
            model,
            size=variant_size,
            quantize=quantize,
            representative_images=representative_images,
        )
        path = out_dir / "tflite" / tflite_name(quantize, variant_size)
        with atomic_file(path) as temporary:
            temporary.write_bytes(data)
        paths[f"tflite_{quantize}_{variant_size or 'dynamic'}"] = path
    paths["onnx"] = export_onnx(model, out_dir / "onnx" / "deeplab.onnx")
    return paths


def artefact_paths(export_dir) -> dict:
    """{name: path} of every SavedModel, TFLite and ONNX file in a folder.

    Raises:
        UserInputError: if there is none.
    """
    export_dir = Path(export_dir)
    paths = {
        f"saved_model v{p.parent.name}": p.parent
        for p in sorted(export_dir.glob("serving/*/*/saved_model.pb"))
    }
    paths.update(
        {p.stem: p for p in sorted(export_dir.glob("tflite/*.tflite"))}
    )
    paths.update({p.name: p for p in sorted(export_dir.glob("onnx/*.onnx"))})
    if not paths:
        raise UserInputError(
            f"no exported model under {str(export_dir)!r}; expected "
            "serving/, tflite/ or onnx/ from `keras-deeplab export`."
        )
    return paths


def artefact_runners(export_dir):
    """{name: fn(images) -> logits} for every artefact in `export_dir`."""
    return {
        name: artefact_runner(path)
        for name, path in artefact_paths(export_dir).items()
    }


def disk_size_mb(path) -> float:
    """Size of a file, or of every file under a folder, in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def time_artefacts(model, export_dir, image, *, repeats=3):
    """Batch-1 latency and size of Keras and of every exported artefact.

    Args:
        model: the Keras model the artefacts were exported from.
        export_dir: folder written by `export_all`.
        image: float32 (1, h, w, 3) at the fixed TFLite size.
        repeats: timed calls after one warm-up; the median is reported.

    Returns:
        List of rows: name, latency_ms, size_mb (None for Keras).
    """
    from keras_deeplab.benchmark.measure import time_calls

    paths = artefact_paths(export_dir)
    runners = {"keras": model.predict_on_batch}
    runners.update({name: artefact_runner(p) for name, p in paths.items()})
    sizes = {name: disk_size_mb(path) for name, path in paths.items()}
    rows = []
    for name, run in runners.items():
        timing = time_calls(
            lambda run=run: run(image), warmup=1, repeats=repeats
        )
        rows.append(
            {
                "name": name,
                "latency_ms": timing["median_s"] * 1e3,
                "size_mb": sizes.get(name),
            }
        )
    return rows


def _miou(masks, logits, num_classes):
    metric = mean_iou(num_classes)
    metric.update_state(masks, logits)
    return float(metric.result())


def verify_exports(model, export_dir, images, masks, *, num_classes):
    """Runs Keras and every artefact on the same images.

    Returns:
        List of rows: name, max_abs_logit_diff, argmax_agreement, miou.
    """
    reference = main_logits(model.predict(images, verbose=0))
    rows = [
        {
            "name": "keras",
            "max_abs_logit_diff": 0.0,
            "argmax_agreement": 1.0,
            "miou": _miou(masks, reference, num_classes),
        }
    ]
    for name, run in artefact_runners(export_dir).items():
        logits = np.asarray(run(images), np.float32)
        rows.append(
            {
                "name": name,
                "max_abs_logit_diff": float(np.abs(logits - reference).max()),
                "argmax_agreement": float(
                    (logits.argmax(-1) == reference.argmax(-1)).mean()
                ),
                "miou": _miou(masks, logits, num_classes),
            }
        )
    return rows


def format_table(rows) -> str:
    lines = [
        f"{'artefact':<28} {'max|Δlogit|':>12} {'argmax agree':>13} {'mIoU':>7}"
    ]
    for row in rows:
        lines.append(
            f"{row['name']:<28} {row['max_abs_logit_diff']:>12.2e} "
            f"{row['argmax_agreement']:>12.3%} {row['miou']:>7.3f}"
        )
    return "\n".join(lines)


def save_report(rows, export_dir):
    return atomic_write_text(
        Path(export_dir) / REPORT_FILE, json.dumps(rows, indent=2) + "\n"
    )


def _examples(config, split, *, size, count, training):
    from keras_deeplab.data.pipeline import make_dataset

    # Crops (training) or pads (evaluation) to the export size; augmented
    # training crops may repeat the split when it is smaller than `count`.
    sized = dataclasses.replace(config, crop_size=size)
    dataset = make_dataset(sized, split, training=training, batch_size=1)
    if training:
        dataset = dataset.repeat()
    pairs = list(dataset.take(count).as_numpy_iterator())
    if not pairs:
        raise UserInputError(f"split {split!r} has no examples to export with.")
    images, masks = zip(*pairs, strict=True)
    return np.concatenate(images), np.concatenate(masks)


def representative_images(config, *, size, count=32):
    """Augmented training crops that calibrate int8 activations."""
    images, _ = _examples(
        config, config.train_split, size=size, count=count, training=True
    )
    return list(images)


def verification_batch(config, *, size, count=16):
    """(images, masks) from the validation split, padded to `size`."""
    return _examples(
        config, config.val_split, size=size, count=count, training=False
    )
