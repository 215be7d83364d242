"""argparse value types of the command line: each turns one flag's text
into a value or an `ArgumentTypeError` that says what was expected."""

import argparse

from keras_deeplab.config import EVAL_SCALE_RANGE

# TF Serving reads version folders as int64.
MAX_VERSION = 2**63 - 1


def positive_int(text, *, limit=None, what="pixels"):
    """argparse type: an int >= 1 (and <= `limit`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (limit is not None and value > limit):
        bound = f" up to {limit}" if limit is not None else ""
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive int{bound} ({what})"
        )
    return value


def version_number(text):
    return positive_int(text, limit=MAX_VERSION, what="TF Serving version")


def scales(text):
    """argparse type: scales within the range `eval_scales` takes."""
    low, high = EVAL_SCALE_RANGE
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        scales = ()
    # `not low <= s <= high` is also true for NaN.
    if not scales or any(not low <= scale <= high for scale in scales):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of scales from {low} to "
            f"{high}, e.g. 0.75,1,1.25"
        )
    return scales


def band_list(text):
    """argparse type: 1-based band numbers, "3,2,1"."""
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        bands = ()
    if len(bands) != 3 or min(bands) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not three band numbers from 1, e.g. 3,2,1"
        )
    return bands


def value_range(text):
    """argparse type: "LOW,HIGH" with LOW < HIGH."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        low = high = 0.0
    if not low < high < float("inf") or low != low:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LOW,HIGH with LOW < HIGH, e.g. 0,4000"
        )
    return (low, high)


def key_value(text):
    """argparse type: `KEY=VALUE` (`--engine-option`) as a (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (e.g. runner=DataflowRunner)"
        )
    return key.strip().lstrip("-"), value
