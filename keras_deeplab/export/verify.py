"""Verification: every exported artefact against the Keras model.

Runs Keras and each artefact of an export folder on the same images, then
reports the largest logit difference, argmax agreement, mIoU against the
ground truth, batch-1 latency and size on disk (`verify-export`).
"""

import json
from pathlib import Path

import numpy as np

from keras_deeplab.evaluation.metrics import mean_iou
from keras_deeplab.export.artefacts import artefact_paths, disk_size_mb
from keras_deeplab.export.runtimes import artefact_runner
from keras_deeplab.models.derived import inference_model, with_precision
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.timing import time_calls

REPORT_FILE = "parity.json"
KERAS_ROW = "keras"


def artefact_runners(export_dir) -> dict:
    """{name: fn(images) -> logits} for every artefact in `export_dir`."""
    return {
        name: artefact_runner(path)
        for name, path in artefact_paths(export_dir).items()
    }


def _miou(masks, logits, num_classes):
    metric = mean_iou(num_classes)
    metric.update_state(masks, logits)
    return float(metric.result())


def _row(name, run, images, *, reference, masks, num_classes, size_mb):
    outputs = np.asarray(run(images))
    classes = reference.shape[-1]
    if outputs.ndim == reference.ndim and outputs.shape[-1] != classes:
        raise UserInputError(
            f"{name} returns {outputs.shape[-1]} classes but the model has "
            f"{classes}: it was exported from another model. Pass the "
            "--model it was exported from (and its --config)."
        )
    latency = time_calls(lambda: run(images[:1]), warmup=1, repeats=3)
    logit_range = float(reference.max() - reference.min())
    if outputs.ndim == reference.ndim - 1:  # --argmax TFLite: class ids
        class_ids, worst = outputs.astype(np.int64), None
        scores = np.eye(num_classes, dtype=np.float32)[class_ids]
    else:
        scores = outputs.astype(np.float32)
        class_ids = scores.argmax(-1)
        worst = float(np.abs(scores - reference).max())
    return {
        "name": name,
        "images": len(images),
        "logit_range": logit_range,
        "max_abs_logit_diff": worst,
        "relative_diff": (
            None
            if worst is None
            else worst / logit_range
            if logit_range
            else 0.0
        ),
        "argmax_agreement": float((class_ids == reference.argmax(-1)).mean()),
        "miou": _miou(masks, scores, num_classes),
        "latency_ms": latency["median_s"] * 1e3,
        "size_mb": size_mb,
    }


def verify_exports(
    model, export_dir, images, masks, *, num_classes, precisions=()
):
    """Runs Keras and every artefact in `export_dir` on the same images.

    Args:
        model: the Keras model the artefacts were exported from.
        export_dir: folder written by `export` / `export_all`.
        images: float32 (batch, h, w, 3) RGB in [0, 255].
        masks: int (batch, h, w) ground truth, 255 = ignore.
        num_classes: int.
        precisions: Keras inference precisions to add as rows, e.g.
            ("bfloat16",) (see `derived.with_precision`).

    Returns:
        One row per runtime (float32 Keras first, the reference): name,
        images, logit_range (of the Keras logits), max_abs_logit_diff,
        relative_diff (to that range; both None for a file that returns
        class ids, TFLite `--argmax`), argmax_agreement, miou (on these
        images), latency_ms (batch 1, median of 3 after a warm-up) and
        size_mb (None for Keras).
    """
    model = inference_model(model)
    reference = np.asarray(model.predict(images, verbose=0), np.float32)
    runners = {KERAS_ROW: (model.predict_on_batch, None)}
    for precision in precisions:
        cast = with_precision(model, precision)
        runners[f"{KERAS_ROW} {precision}"] = (cast.predict_on_batch, None)
    for name, path in artefact_paths(export_dir).items():
        runners[name] = (artefact_runner(path), disk_size_mb(path))
    return [
        _row(
            name,
            run,
            images,
            size_mb=size_mb,
            reference=reference,
            masks=masks,
            num_classes=num_classes,
        )
        for name, (run, size_mb) in runners.items()
    ]


def format_table(rows) -> str:
    """The parity table as text: what was compared, then one artefact a
    line."""
    first = rows[0]
    lines = [
        f"{first['images']} validation images; Keras logit range "
        f"{first['logit_range']:.2f}. mIoU here scores these images only "
        "(padded or center-cropped to the export size); `evaluate` scores "
        "the whole split, each image at its own size.",
        f"{'artefact':<30} {'max|Δlogit|':>12} {'of range':>9} "
        f"{'argmax agree':>13} {'mIoU':>7} {'ms':>8} {'MiB':>7}",
    ]
    for row in rows:
        size = "-" if row["size_mb"] is None else f"{row['size_mb']:.1f}"
        if row["max_abs_logit_diff"] is None:  # class ids, no logits
            worst, relative = f"{'class ids':>12}", f"{'-':>9}"
        else:
            worst = f"{row['max_abs_logit_diff']:>12.2e}"
            relative = f"{row['relative_diff']:>9.1e}"
        lines.append(
            f"{row['name']:<30} {worst} {relative} "
            f"{row['argmax_agreement']:>12.3%} "
            f"{row['miou']:>7.3f} {row['latency_ms']:>8.1f} {size:>7}"
        )
    return "\n".join(lines)


def save_report(rows, export_dir) -> Path:
    """Writes the rows as `parity.json` in the export folder."""
    return atomic_write_text(
        Path(export_dir) / REPORT_FILE, json.dumps(rows, indent=2) + "\n"
    )
