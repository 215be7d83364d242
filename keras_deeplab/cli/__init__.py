"""Command line: `keras-deeplab train|evaluate|predict|export|demo|...`.

User errors (missing file, bad config key or value, bad data, a full disk)
exit with status 2 and one line on stderr, never a traceback; Ctrl-C exits
130 with one line. TensorFlow's C++ logs are silenced unless `--verbose`.
`--help` loads neither Keras nor TensorFlow.
"""

import contextlib
import errno
import sys

from keras_deeplab.cli.commands import COMMANDS
from keras_deeplab.cli.native_logs import filtered_stderr
from keras_deeplab.cli.parser import build_parser
from keras_deeplab.utils.errors import UserInputError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def main(argv=None):
    """Runs the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    quiet = contextlib.nullcontext() if args.verbose else filtered_stderr()
    with quiet:
        return _run(args)


def _pipeline_errors():
    """TensorFlow's error for a failed in-graph check, once TF is loaded
    (an empty tuple matches nothing before)."""
    tensorflow = sys.modules.get("tensorflow")
    return (tensorflow.errors.InvalidArgumentError,) if tensorflow else ()


def _pipeline_message(err) -> str:
    """The one line of a tf.data check failure that the user needs."""
    from keras_deeplab.data.pipeline import DATA_ERROR_MARK

    for line in err.message.splitlines():
        if DATA_ERROR_MARK in line:
            message = line.split(DATA_ERROR_MARK, 1)[1]
            # tf.strings.format, Assert and py_function errors print
            # strings escaped.
            message = message.rstrip("] ").strip()
            return message.replace('\\"', '"').replace("\\'", "'")
    return err.message.strip().splitlines()[0]


def _fail(args, message, status=USER_ERROR_EXIT):
    print(f"keras-deeplab {args.command}: error: {message}", file=sys.stderr)
    return status


def _run(args):
    try:
        status = COMMANDS[args.command](args) or 0
    except (UserInputError, FileNotFoundError, FileExistsError) as err:
        return _fail(args, err)
    except KeyboardInterrupt:
        resumable = args.command in ("train", "demo")
        return _fail(
            args,
            "interrupted; "
            + (
                "the last backup is intact: run again with --resume"
                if resumable
                else "nothing was left half-written"
            ),
            INTERRUPTED_EXIT,
        )
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        return _fail(
            args,
            f"no space left on the device writing {err.filename or 'a file'}"
            "; free some space and run again (nothing half-written was "
            "kept).",
        )
    except _pipeline_errors() as err:
        # Raised from inside tf.data by the file, size and label checks.
        return _fail(args, _pipeline_message(err))
    return status
