"""Matplotlib figures of data, training and exports (notebooks and demo).

Each function returns a `matplotlib.figure.Figure` built without pyplot, so
nothing depends on a display or on global figure state: a notebook shows
the returned figure, scripts call `save_figure`.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.utils.atomic import atomic_file
from keras_deeplab.visualize.masks import class_palette, colorize, overlay

_DPI = 100


def save_figure(figure: Figure, path) -> Path:
    """Writes a figure as PNG, atomically; returns the path."""
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=_DPI, format="png")
    return Path(path)


def _hide_axes(axes, *, keep_labels=False):
    """No ticks or frames; with `keep_labels`, x labels stay readable."""
    for axis in np.ravel(axes):
        if keep_labels:
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
        else:
            axis.set_axis_off()


def sample_grid(images, masks, *, columns: int = 4) -> Figure:
    """First `columns` images above their colourised masks."""
    columns = min(columns, len(images))
    figure = Figure(figsize=(2.5 * columns, 5), layout="constrained")
    axes = figure.subplots(2, columns, squeeze=False)
    for column in range(columns):
        axes[0, column].imshow(np.asarray(images[column]).astype(np.uint8))
        axes[1, column].imshow(colorize(np.asarray(masks[column])))
    axes[0, 0].set_title("image", loc="left")
    axes[1, 0].set_title("mask (white = ignore)", loc="left")
    _hide_axes(axes)
    return figure


def training_curves(history: dict) -> Figure:
    """Loss and mean IoU per epoch from a `History.history`-like dict."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    loss_axis, iou_axis = figure.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for key, axis in (("loss", loss_axis), ("mean_iou", iou_axis)):
        axis.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], marker="o", label="val")
        axis.set(xlabel="epoch", ylabel=key)
        axis.legend()
    loss_axis.set_title("cross-entropy")
    iou_axis.set(title="mean IoU", ylim=(0, 1))
    return figure


def class_iou_bars(per_class_iou, names) -> Figure:
    """Horizontal IoU bar per class; classes absent from the data show '-'."""
    figure = Figure(figsize=(6, 0.3 * len(names) + 1), layout="constrained")
    axis = figure.subplots()
    values = [0.0 if iou is None else iou for iou in per_class_iou]
    positions = np.arange(len(names))
    axis.barh(positions, values, color="tab:blue")
    for position, iou in zip(positions, per_class_iou, strict=True):
        label = "-" if iou is None else f"{iou:.2f}"
        axis.text(
            min(values[position], 0.9) + 0.01, position, label, va="center"
        )
    axis.set_yticks(positions, names)
    axis.invert_yaxis()
    axis.set(xlim=(0, 1), xlabel="IoU", title="per-class IoU")
    return figure


def confusion_matrix_figure(counts, names) -> Figure:
    """The confusion matrix with each row (true class) as fractions of its
    labelled pixels: the diagonal is per-class accuracy."""
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    rows = np.divide(
        counts, totals, out=np.zeros_like(counts), where=totals > 0
    )
    side = max(4.0, 0.35 * len(names) + 2)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    positions = np.arange(len(names))
    axis.set_xticks(positions, names, rotation=90)
    axis.set_yticks(positions, names)
    axis.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    if len(names) <= 25:  # larger matrices have no room for numbers
        for (row, column), value in np.ndenumerate(rows):
            if value >= 0.005:
                axis.text(
                    column,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    return figure


def comparison_rows(images, masks, predictions) -> np.ndarray:
    """One RGB row per image: image | ground truth | prediction overlay."""
    rows = [
        np.concatenate(
            [
                np.asarray(image).astype(np.uint8),
                colorize(mask),
                overlay(np.asarray(image).astype(np.uint8), prediction),
            ],
            axis=1,
        )
        for image, mask, prediction in zip(
            images,
            np.asarray(masks),
            np.asarray(predictions, np.uint8),
            strict=True,
        )
    ]
    return np.concatenate(rows, axis=0)


_COLUMNS = (
    "image",
    "label (ground truth)",
    "prediction",
    "errors (red: wrong; grey: ignored)",
)
_WRONG = (230, 25, 25)
_IGNORED = (150, 150, 150)


def error_map(image, mask, prediction) -> np.ndarray:
    """The image dimmed, wrong pixels in red and ignored ones grey: where
    a prediction fails is visible at a glance."""
    picture = (0.35 * np.asarray(image, np.float32)).astype(np.uint8)
    mask, prediction = np.asarray(mask), np.asarray(prediction)
    picture[(prediction != mask) & (mask != IGNORE_INDEX)] = _WRONG
    picture[mask == IGNORE_INDEX] = _IGNORED
    return picture


def prediction_grid(images, masks, predictions, names=None) -> Figure:
    """One row per image: the image, its label and the prediction in solid
    palette colours, and an error map (with the share of wrong pixels);
    titles say what each column is and, given class `names`, a legend of
    the classes shown sits below. The figure grows with the rows, the text
    does not shrink."""
    rows = len(images)
    figure = Figure(figsize=(12, 3 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, 4, squeeze=False)
    for row, (image, mask, prediction) in enumerate(
        zip(images, np.asarray(masks), np.asarray(predictions), strict=True)
    ):
        image = np.asarray(image).astype(np.uint8)
        panels = (
            image,
            colorize(mask),
            colorize(prediction),
            error_map(image, mask, prediction),
        )
        for column, panel in enumerate(panels):
            axes[row, column].imshow(panel, interpolation="nearest")
        labelled = mask != IGNORE_INDEX
        wrong = (prediction != mask)[labelled].mean() if labelled.any() else 0
        axes[row, 3].set_xlabel(f"{wrong:.1%} of labelled pixels wrong")
    for axis, title in zip(axes[0], _COLUMNS, strict=True):
        axis.set_title(title, fontsize=11)
    _hide_axes(axes, keep_labels=True)
    if names is not None:
        shown = np.union1d(np.unique(masks), np.unique(predictions))
        palette = class_palette(256) / 255.0
        figure.legend(
            handles=[
                Patch(color=palette[c], label=names[c])
                for c in shown
                if c < len(names)
            ],
            loc="outside lower center",
            ncols=min(len(shown), 6),
            fontsize=11,
        )
    return figure


def runtime_comparison(rows) -> Figure:
    """Latency and file size per runtime from `parity.time_artefacts`."""
    figure = Figure(figsize=(10, 0.35 * len(rows) + 1.5), layout="constrained")
    latency_axis, size_axis = figure.subplots(1, 2, sharey=True)
    names = [row["name"] for row in rows]
    positions = np.arange(len(rows))
    latency_axis.barh(positions, [row["latency_ms"] for row in rows])
    latency_axis.set(xlabel="ms per image (median)", title="latency")
    sizes = [row["size_mb"] or 0.0 for row in rows]
    size_axis.barh(positions, sizes, color="tab:orange")
    size_axis.set(xlabel="MiB on disk", title="size")
    latency_axis.set_yticks(positions, names)
    latency_axis.invert_yaxis()
    return figure


def disagreement_map(
    image, reference, other, *, labels=("fp32", "int8")
) -> Figure:
    """Two class maps of one image and where they disagree (in red)."""
    image = np.asarray(image).astype(np.uint8)
    differs = np.asarray(reference) != np.asarray(other)
    highlighted = (0.4 * image).astype(np.uint8)
    highlighted[differs] = (255, 0, 0)
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    axes = figure.subplots(1, 4)
    panels = [
        (image, "image"),
        (overlay(image, np.asarray(reference, np.uint8)), labels[0]),
        (overlay(image, np.asarray(other, np.uint8)), labels[1]),
        (highlighted, f"disagree: {differs.mean():.2%} of pixels"),
    ]
    for axis, (picture, title) in zip(axes, panels, strict=True):
        axis.imshow(picture)
        axis.set_title(title)
    _hide_axes(axes)
    return figure
