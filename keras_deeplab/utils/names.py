"""Names that become folders or files: checked before anything is written."""

import re

from keras_deeplab.utils.errors import UserInputError

# A model name becomes a folder (and a TF Serving model name): letters,
# digits, ".", "_", "-", no "..", and short enough for any file system.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_model_name(model_name: str) -> str:
    """Returns `model_name` if it is safe as one path component.

    Raises:
        UserInputError: for names that could leave the export folder.
    """
    if (
        not isinstance(model_name, str)
        or not _SAFE_NAME.fullmatch(model_name)
        or ".." in model_name
    ):
        raise UserInputError(
            f"model_name={model_name!r} is invalid; expected one folder name "
            "of 1 to 100 letters, digits, '.', '_' or '-' (no '/' or '..'), "
            "e.g. --set model_name=deeplab."
        )
    return model_name
