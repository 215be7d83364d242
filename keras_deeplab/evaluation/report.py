"""`evaluate --report DIR`: the evaluation as files a person or a script
reads: report.json (every score), per_class.csv (one row per class) and
confusion_matrix.png. Each file is written atomically."""

import csv
import io
import json
from pathlib import Path

from keras_deeplab.evaluation.evaluate import PER_CLASS_COLUMNS
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.visualize.figures import confusion_matrix_figure, save_figure

REPORT_FILE = "report.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FIGURE = "confusion_matrix.png"


def _per_class_csv(results) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    keys = [key for key, _ in PER_CLASS_COLUMNS]
    writer.writerow(
        ["class_id", "class", *(key.removeprefix("per_class_") for key in keys)]
        + ["pixels"]
    )
    for index, name in enumerate(results["class_names"]):
        values = [results[key][index] for key in keys]
        writer.writerow(
            [index, name]
            + ["" if value is None else f"{value:.6f}" for value in values]
            + [results["pixels"][index]]
        )
    return text.getvalue()


REPORT_FILES = (REPORT_FILE, PER_CLASS_FILE, CONFUSION_FIGURE)


def check_report_dir(directory, *, overwrite: bool):
    """Refuses a folder holding an earlier report unless `overwrite`
    (checked before an evaluation that may take hours)."""
    existing = [
        name for name in REPORT_FILES if (Path(directory) / name).exists()
    ]
    if existing and not overwrite:
        raise UserInputError(
            f"--report {str(directory)!r} already holds an earlier report "
            f"({', '.join(existing)}); pass --overwrite to replace it or "
            "choose another folder."
        )


def write_report(results, directory) -> list:
    """Writes the three report files of an `evaluate_model` result into
    `directory` (created); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / REPORT_FILE
    atomic_write_text(report, json.dumps(results, indent=2) + "\n")
    per_class = directory / PER_CLASS_FILE
    atomic_write_text(per_class, _per_class_csv(results))
    figure = confusion_matrix_figure(
        results["confusion_matrix"], results["class_names"]
    )
    return [
        report,
        per_class,
        save_figure(figure, directory / CONFUSION_FIGURE),
    ]
