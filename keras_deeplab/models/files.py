"""Model and weights files: the checks and one-line errors around Keras'
loaders (safe mode always; no training state rebuilt)."""

import warnings
import zipfile
from pathlib import Path

import keras

from keras_deeplab.utils.errors import UserInputError, first_line

# What Keras raises for archives it cannot rebuild: safe-mode refusals
# (ValueError), unknown classes (TypeError), broken configs (KeyError), bad
# zip members and HDF5 weights (OSError, BadZipFile).
MODEL_FILE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    zipfile.BadZipFile,
)


def load_weights(model, path):
    """`model.load_weights(path)` with a clear error for a file that does
    not fit (another architecture, another config, a damaged file).

    Keras warns once per layer it cannot fill before it raises; the one
    error here says it all, so those warnings are not shown.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except MODEL_FILE_ERRORS as err:
        raise UserInputError(
            f"weights file {str(path)!r} does not load into {model.name} "
            f"({first_line(err)}); expected weights saved from a model "
            "with the same backbone, variant, head and num_classes."
        ) from err


def existing_model_file(path) -> Path:
    """`path` as a Path, or FileNotFoundError saying what was expected."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(
            f"model {str(path)!r} is a folder; expected a .keras file (e.g. "
            "work_dir/best.keras), a .weights.h5 file or a preset name "
            "(keras-deeplab presets)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {str(path)!r} does not exist; expected a .keras file "
            "(e.g. work_dir/best.keras), a .weights.h5 file or a preset name "
            "(keras-deeplab presets)."
        )
    return path


def load_model_file(path) -> keras.Model:
    """Loads a `.keras` model in safe mode, without its training state.

    safe_mode refuses lambdas and arbitrary code in the archive. Every load
    here is for inference or for weights, so the optimizer and metrics a
    training checkpoint carries are not rebuilt.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: for a file that is not a loadable `.keras` model.
    """
    path = existing_model_file(path)
    if not zipfile.is_zipfile(path):
        raise UserInputError(
            f"model file {str(path)!r} is not a .keras archive (a zip file): "
            "it is empty, truncated or in another format. Use a .keras file "
            "written by model.save or keras-deeplab."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except MODEL_FILE_ERRORS as err:
        raise UserInputError(
            f"model file {str(path)!r} cannot be loaded in safe mode "
            f"({first_line(err)}); expected a model saved by keras-deeplab, "
            "without Lambda layers or custom code."
        ) from err
