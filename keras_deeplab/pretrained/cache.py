"""Converted models in the cache, each with a record that vouches for it.

A checkpoint is converted once into `<cache>/models/<stem>.v<N>.keras`;
beside it, `<stem>.v<N>.json` records the source file's SHA-256 and the
converted file's own SHA-256. A cached model is used only when both still
hold (the expected source, and a file nobody changed since it was written);
otherwise it is moved aside (`<name>.rejected`) with a message and
converted again. A conversion that fails on a cached download, or yields
weights that are not finite, moves that download aside and names it.
"""

import json
from pathlib import Path

from keras_deeplab.pretrained.download import (
    cache_dir,
    file_sha256,
    moved_aside,
)
from keras_deeplab.utils.atomic import atomic_file, atomic_write_text
from keras_deeplab.utils.errors import UserInputError

# Bumped whenever conversion changes what it writes: older converted files
# in the cache are then converted again from their downloads. 2: with the
# record beside each file.
CONVERTED_FORMAT = 2
CONVERTED = "models"


def converted_path(stem: str) -> Path:
    return cache_dir() / CONVERTED / f"{stem}.v{CONVERTED_FORMAT}.keras"


def _record_path(target: Path) -> Path:
    return target.with_suffix(".json")


def _record_problem(target, source_sha256):
    """Why the cached conversion `target` cannot be trusted, or None."""
    record_path = _record_path(target)
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        return "it has no record of its source"
    except (OSError, ValueError) as err:
        return f"its record is unreadable ({type(err).__name__})"
    if not isinstance(record, dict):
        return "its record is not a JSON object"
    source = str(record.get("source_sha256", ""))
    if source_sha256 is not None and not source.startswith(source_sha256):
        return f"it was converted from {source[:16]}, not {source_sha256}"
    if record.get("keras_sha256") != file_sha256(target):
        return "it changed after it was written"
    return None


def cached_conversion(target: Path, source_sha256=None) -> Path | None:
    """`target` when its record vouches for it; else None, with a file that
    fails its check moved aside (and said so)."""
    if not target.is_file():
        return None
    problem = _record_problem(target, source_sha256)
    if problem is None:
        return target
    aside = moved_aside(target)
    _record_path(target).unlink(missing_ok=True)
    print(
        f"cached model {str(target)!r} failed its check ({problem}): moved "
        f"to {str(aside)!r}; converting again.",
        flush=True,
    )
    return None


def _check_finite(model, checkpoint):
    import numpy as np

    for weight in model.weights:
        values = np.asarray(weight)
        if not np.isfinite(values).all():
            raise UserInputError(
                f"checkpoint {str(checkpoint)!r} holds weights that are not "
                f"finite ({int((~np.isfinite(values)).sum())} NaN or inf in "
                f"{weight.path}); expected trained weights."
            )


def _in_cache(path) -> bool:
    return Path(path).resolve().is_relative_to(cache_dir().resolve())


def convert_once(checkpoint, target, *, source_sha256, **options) -> Path:
    """Converts `checkpoint` into `target` (atomically, with its record)
    unless a vouched-for conversion is there. `options` go to
    `convert_torchvision` (arch, output_stride, class_names)."""
    if cached_conversion(target, source_sha256) is not None:
        return target
    # Keras loads only when a conversion is due (`presets` lists without it).
    from keras_deeplab.convert.torchvision import convert_torchvision

    print(f"converting {checkpoint} ({options['arch']}) -> {target}")
    try:
        model = convert_torchvision(checkpoint, **options)
        _check_finite(model, checkpoint)
    except UserInputError as err:
        if not _in_cache(checkpoint):
            raise
        aside = moved_aside(checkpoint)
        raise UserInputError(
            f"{err} The cached download was moved to {str(aside)!r}; the "
            "next use downloads it again."
        ) from err
    with atomic_file(target) as temporary:
        model.save(temporary)
    record = {
        "source_sha256": file_sha256(checkpoint),
        "keras_sha256": file_sha256(target),
        "format": CONVERTED_FORMAT,
    }
    atomic_write_text(_record_path(target), json.dumps(record, indent=1))
    return target
