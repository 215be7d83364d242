"""Coverage-guided fuzzing of the torch-free checkpoint reader (atheris).

    python -m tests.fuzz_torch_file WORK_CORPUS tests/fixtures/torch_corpus \
        -max_total_time=600 -rss_limit_mb=1024

libFuzzer options pass through; the first folder is where new inputs are
written (never the repository's corpus, which is read only). Each input's
first byte chooses what the rest is, so mutations reach the pickles inside
a well-formed container as well as the container itself:

- 0: a whole file, as bytes on disk;
- 1: the data.pkl of a zip checkpoint with two genuine storage records;
- 2: the object pickle of a legacy checkpoint with the same storages;
- 3: the byteorder record of a zip checkpoint holding one float tensor.

Every input must be read or refused with the reader's own `UserInputError`;
a read must return only numpy arrays, numbers, strings and plain
containers; a payload in a pickle must never run (the corpus holds pickles
that would create `PAYLOAD_MARKER` in the working folder); and the process
must stay under libFuzzer's RSS limit while the reader's own limit is
`MAX_BYTES`. Any other exception, or a crash, is a finding: libFuzzer writes
the input as `crash-*` in the working folder; add it to the corpus with the
fix (tests/test_torch_file_fuzz.py replays every corpus input).
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from keras_deeplab.utils.errors import UserInputError
from tests.torch_crafted import (
    legacy_bytes,
    op_tensor,
    state_dict_pickle,
    write_zip,
)

PAYLOAD_MARKER = "kd_fuzz_payload_ran"
MAX_BYTES = 64 * 2**20
_FLOATS = np.arange(16, dtype=np.float32).tobytes()
_LONGS = np.arange(4, dtype=np.int64).tobytes()
_ZIP_RECORDS = {"0": _FLOATS, "1": _LONGS}
_LEGACY_RECORDS = {"0": (16, _FLOATS), "1": (4, _LONGS)}
_ONE_TENSOR = state_dict_pickle(
    {"w": op_tensor("FloatStorage", "0", 16, size=(4, 4), stride=(4, 1))}
)
_PLAIN = (str, bytes, int, float, bool, type(None), np.ndarray, np.generic)


def file_bytes(data: bytes, folder: Path) -> bytes:
    """The checkpoint file one fuzz input stands for (see the module)."""
    mode, rest = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode == 0:
        return rest
    if mode == 2:
        return legacy_bytes(rest, _LEGACY_RECORDS)
    path = folder / "container.zip"
    if mode == 1:
        write_zip(path, rest, _ZIP_RECORDS)
    else:
        write_zip(path, _ONE_TENSOR, {"0": _FLOATS}, byteorder=rest)
    return path.read_bytes()


def check_plain(value, seen=None):
    """A successful read holds only arrays, scalars and plain containers
    (each container checked once: a read may share one many times)."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list | tuple | set | frozenset):
        if id(value) in seen:
            return
        seen.add(id(value))
        items = (
            [*value.keys(), *value.values()]
            if isinstance(value, dict)
            else value
        )
        for item in items:
            check_plain(item, seen)
    elif not isinstance(value, _PLAIN):
        raise AssertionError(f"the reader returned a {type(value)!r}")


def read_one(data: bytes, folder: Path):
    """Reads one input as a checkpoint; raises on any finding."""
    from keras_deeplab.convert.torch_file import read_torch_file

    path = folder / "input.pth"
    path.write_bytes(file_bytes(data, folder))
    try:
        check_plain(read_torch_file(path, max_bytes=MAX_BYTES))
    except UserInputError:
        pass
    if (folder / PAYLOAD_MARKER).exists():
        raise AssertionError("a pickle payload ran")


def main(argv):
    import atheris

    folder = Path(tempfile.mkdtemp(prefix="kd-fuzz-"))
    argv = [
        arg if arg.startswith("-") else str(Path(arg).resolve()) for arg in argv
    ]
    os.chdir(folder)  # a payload's relative marker lands here

    def test_one_input(data):
        read_one(data, folder)

    # Coverage of the reader only: instrumenting numpy and the rest of
    # what is loaded costs a minute at start.
    with atheris.instrument_imports(include=["keras_deeplab.convert"]):
        import keras_deeplab.convert.torch_file  # noqa: F401
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
