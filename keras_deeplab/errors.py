"""The error type for bad user input, kept apart from library failures."""


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
