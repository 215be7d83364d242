"""The error type for bad user input, kept apart from library failures, and
the reading of a small text file a user names with that error."""


class UserInputError(ValueError):
    """A bad argument, config value or input file, with its fix in the message.

    A ValueError, so callers may catch either; the CLI prints it in one line
    and exits 2, while any other exception is a bug and keeps its traceback.
    """


def first_line(err, *, limit: int = 300) -> str:
    """The first line of an exception's message (its type if empty), for
    one-line errors that wrap a library's multi-line one."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


_MAX_TEXT_BYTES = 1 << 20  # palettes, name lists: a few KB


def read_text_file(path, *, what: str, max_bytes: int = _MAX_TEXT_BYTES):
    """The UTF-8 text of a small file a user names (a palette, a list of
    class names), or one UserInputError saying what is wrong with it.

    Args:
        path: str or Path.
        what: str. How the message names the file, e.g. "mask_colors
            palette file".
        max_bytes: int. Larger files are refused before they are read.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > max_bytes:
        raise UserInputError(
            f"{what} {str(path)!r} is {size:,} bytes; expected a small text "
            f"file (at most {max_bytes:,})."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"{what} {str(path)!r} is not UTF-8 text ({err.reason} at byte "
            f"{err.start}); save it as UTF-8."
        ) from err
