"""PyTorch checkpoint files read without PyTorch: tensors become numpy arrays.

A `.pth` file is a pickle whose tensors point at raw storages: inside a zip
archive (`torch.save` since PyTorch 1.6, 2020) or appended after the pickle
(the legacy format of earlier releases, which torchvision's 2019 DeepLabV3
files and many research checkpoints still use). Both are read here.

Unpickling runs code named by the file, so two gates stand in front of it.
The whole pickle is scanned first and any global outside what a file of
weights needs (`torch_values`) is refused, listed, before anything is built.
Then every pickle of both formats, the legacy header ones included, is built
by `restricted_pickle`, which makes plain values itself, calls only the
allow-listed rebuild functions of this one read, and refuses `BUILD` on
anything it did not make. Sizes are checked before bytes are read or
inflated: each storage record against its element count, each view against
its storage, and the total against `max_bytes` (docs/pretrained.md). The
tar format of PyTorch < 0.4, sparse and quantized tensors, and whole
pickled `nn.Module`s are refused with a message saying so.
"""

import os
import pickletools
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_deeplab.convert import restricted_pickle
from keras_deeplab.convert.restricted_pickle import (
    MalformedError,
    RefusedError,
    shown,
)
from keras_deeplab.convert.torch_values import (
    LimitError,
    TorchLoad,
    materialised,
)
from keras_deeplab.utils.errors import UserInputError

MAX_BYTES_ENV = "KERAS_DEEPLAB_MAX_CHECKPOINT_BYTES"
# The largest published DeepLab checkpoints are ~250 MB; a whole training
# state (weights and optimizer moments) of a ResNet-101 is ~750 MB.
DEFAULT_MAX_BYTES = 4 * 2**30
# A state dict's pickle is a few hundred KB (names, shapes, strides).
MAX_PICKLE_BYTES = 64 * 2**20
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_PICKLE = "data.pkl"
_BYTE_ORDERS = ("little", "big")
_MAX_LISTED = 8
# torch.save stores records uncompressed; a re-zipped file may deflate them.
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ENCRYPTED = 0x1
# Float weights deflate by less than 2x; a record that inflates 64x more
# than its compressed size is a zip bomb, not weights.
_MAX_INFLATION = 64
_SMALL_RECORD = 1 << 20


def max_checkpoint_bytes(max_bytes=None) -> int:
    """`max_bytes`, else `$KERAS_DEEPLAB_MAX_CHECKPOINT_BYTES`, else 4 GiB."""
    if max_bytes is None:
        text = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_BYTES
        try:
            max_bytes = int(text)
        except ValueError:
            max_bytes = None
        if max_bytes is None or max_bytes < 1:
            raise UserInputError(
                f"{MAX_BYTES_ENV}={text!r} is invalid; expected a positive "
                "number of bytes, e.g. 8589934592 for 8 GiB."
            )
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise UserInputError(
            f"max_bytes={max_bytes!r} is invalid; expected a positive number "
            "of bytes."
        )
    return max_bytes


def _check_globals(data, path, allowed):
    try:
        names = set(restricted_pickle.referenced_globals(data))
    except (ValueError, EOFError) as err:  # what genops raises on junk
        raise _unreadable(path, err) from err
    refused = sorted(names - allowed)
    if refused:
        shown = ", ".join(refused[:_MAX_LISTED])
        raise UserInputError(
            f"checkpoint {str(path)!r} is refused: its pickle names "
            f"{len(refused)} Python objects a file of weights never needs "
            f"({shown}); nothing was unpickled. Expected tensors saved by "
            "torch.save(model.state_dict(), path)."
        )


def _unpickle(data, path, load, *, persistent_load=None):
    """Both gates: the scan, then the restricted build."""
    _check_globals(data, path, load.allowed_names())
    return restricted_pickle.load(
        data,
        find_class=load.find_class,
        persistent_load=persistent_load,
        build=load.build,
    )


def _plain_value(data, path):
    """A header pickle of the legacy format: plain values, no globals."""
    _check_globals(data, path, set())
    return restricted_pickle.load(data, find_class=_no_globals)


def _no_globals(module, name):
    raise RefusedError(f"the Python object {module}.{name}")


def _unreadable(path, err):
    return UserInputError(
        f"checkpoint {str(path)!r} is not a readable PyTorch file "
        f"({type(err).__name__}: {str(err)[:200]}); expected a file written "
        "by torch.save(model.state_dict(), path)."
    )


def _refused(path, err):
    if isinstance(err, LimitError):
        return UserInputError(
            f"checkpoint {str(path)!r} is refused: {err}. A file you trust "
            f"may raise the limit: read_torch_file(..., max_bytes=N) or "
            f"{MAX_BYTES_ENV}=N."
        )
    return UserInputError(
        f"checkpoint {str(path)!r} is refused: it holds {err}, which a file "
        "of weights never needs."
    )


def _read_record(archive, info, size, what):
    """The bytes of one zip record that must hold exactly `size` bytes,
    refused before it is inflated when its header says otherwise and read
    no further than `size` + 1 when the header lies."""
    if info.file_size != size:
        raise MalformedError(
            f"{what} {info.filename!r} holds {info.file_size:,} bytes where "
            f"{size:,} were declared"
        )
    if info.flag_bits & _ENCRYPTED or info.compress_type not in _COMPRESSIONS:
        raise MalformedError(
            f"{what} {info.filename!r} is encrypted or compressed in a way "
            "torch.save never writes"
        )
    if info.file_size > _MAX_INFLATION * info.compress_size + _SMALL_RECORD:
        raise LimitError(
            f"{what} {info.filename!r} inflates {info.compress_size:,} bytes "
            f"to {info.file_size:,} (weights compress less than "
            f"{_MAX_INFLATION}x)"
        )
    with archive.open(info) as handle:
        data = handle.read(size + 1)
    if len(data) != size:
        raise MalformedError(f"{what} {info.filename!r} is not its stated size")
    return data


def _zip_pickle(archive, path):
    infos = {info.filename: info for info in archive.infolist()}
    pickles = [
        name
        for name in infos
        if name.endswith("/" + _ZIP_PICKLE) and name.count("/") == 1
    ]
    if len(pickles) != 1:
        raise UserInputError(
            f"checkpoint {str(path)!r} is a zip file without one "
            f"<name>/{_ZIP_PICKLE} record ({len(pickles)} found): not a "
            "torch.save file (a TorchScript archive or another zip)."
        )
    info = infos[pickles[0]]
    if info.file_size > MAX_PICKLE_BYTES:
        raise LimitError(
            f"a {info.file_size:,}-byte pickle (at most {MAX_PICKLE_BYTES:,})"
        )
    data = _read_record(archive, info, info.file_size, "pickle")
    return infos, pickles[0][: -len(_ZIP_PICKLE)], data


def _zip_byteorder(archive, infos, prefix):
    info = infos.get(f"{prefix}byteorder")
    if info is None:
        return "little"
    if info.file_size > 16:
        raise MalformedError(f"a byteorder record of {info.file_size} bytes")
    text = _read_record(archive, info, info.file_size, "record")
    try:
        byteorder = text.decode("ascii").strip()
    except UnicodeDecodeError:
        byteorder = repr(text)
    if byteorder not in _BYTE_ORDERS:
        raise MalformedError(
            f"byteorder {byteorder!r}; expected one of {_BYTE_ORDERS}"
        )
    return byteorder


def _read_zip(path, load):
    with zipfile.ZipFile(path) as archive:
        infos, prefix, data = _zip_pickle(archive, path)
        byteorder = _zip_byteorder(archive, infos, prefix)
        storages = {}

        def storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5):
                raise RefusedError(f"a persistent object ({shown(pid)})")
            kind, storage_type, key, _location, numel = pid
            if kind != "storage" or not isinstance(key, str):
                raise RefusedError(f"a persistent object ({shown(kind)})")
            if key not in storages:
                record = infos.get(f"{prefix}data/{key}")
                if record is None:
                    raise MalformedError(
                        f"no data record for storage {shown(key)}"
                    )
                new = load.new_storage(storage_type, numel)
                raw = _read_record(archive, record, new.nbytes, "record")
                new.data = _from_byteorder(raw, new.type.dtype, byteorder)
                storages[key] = new
            found = storages[key]
            if (found.type, found.numel) != (storage_type, numel):
                raise MalformedError(f"storage {shown(key)} declared twice")
            return found

        return _unpickle(data, path, load, persistent_load=storage)


def _from_byteorder(data, dtype, byteorder):
    if byteorder == "little" or dtype.itemsize == 1:
        return data
    return np.frombuffer(data, dtype.newbyteorder(">")).astype(dtype).tobytes()


class _BoundedReader:
    """The file API genops reads a pickle with, over `data` from `offset`,
    refusing any read that would take the pickle past MAX_PICKLE_BYTES
    (before the bytes are copied)."""

    def __init__(self, data, offset):
        self.data, self.start, self.position = data, offset, offset

    def _take(self, end):
        if end - self.start > MAX_PICKLE_BYTES:
            raise LimitError(f"a pickle over {MAX_PICKLE_BYTES:,} bytes")
        chunk = bytes(self.data[self.position : end])
        self.position += len(chunk)
        return chunk

    def read(self, size=-1):
        end = len(self.data) if size is None or size < 0 else size
        return self._take(min(len(self.data), self.position + end))

    def readline(self):
        newline = self.data.obj.find(b"\n", self.position)
        end = len(self.data) if newline < 0 else newline + 1
        return self._take(end)

    def tell(self):
        return self.position


def _next_pickle(data, offset):
    """The bytes of the pickle starting at `offset` (read, never loaded)."""
    reader = _BoundedReader(data, offset)
    for opcode, _, _ in pickletools.genops(reader):
        if opcode.name == "STOP":
            return bytes(data[offset : reader.tell()])
    raise EOFError("a pickle without its STOP opcode")


def _read_legacy(path, load):
    """Legacy format: pickles of the magic number, the protocol, system info,
    the object and its storage keys, then each storage's raw data."""
    size = path.stat().st_size
    if size > load.max_bytes + MAX_PICKLE_BYTES:
        raise LimitError(f"a file of {size:,} bytes")
    data = memoryview(path.read_bytes())  # storages are views of it
    parts, offset = [], 0
    try:
        for _ in range(5):
            parts.append(_next_pickle(data, offset))
            offset += len(parts[-1])
    except (ValueError, EOFError) as err:
        raise _unreadable(path, err) from err
    magic, protocol, sys_info, main, keys = parts
    if (_plain_value(magic, path), _plain_value(protocol, path)) != (
        _LEGACY_MAGIC,
        _LEGACY_PROTOCOL,
    ):
        raise _unreadable(path, ValueError("no PyTorch magic number"))
    info, key_order = _plain_value(sys_info, path), _plain_value(keys, path)
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise UserInputError(
            f"checkpoint {str(path)!r} was written on a big-endian machine in "
            "the legacy format; re-save it with a current torch.save."
        )
    if not isinstance(key_order, list) or not all(
        isinstance(key, str) for key in key_order
    ):  # a key is looked up in a dict: a list as a key raised TypeError (F05)
        raise MalformedError("a storage key list that is no list of strings")
    storages = {}

    def storage(pid):
        if not (isinstance(pid, tuple) and len(pid) == 6):
            raise RefusedError(f"a persistent object ({shown(pid)})")
        kind, storage_type, key, _location, numel, view_metadata = pid
        if kind != "storage":
            raise RefusedError(f"a persistent object ({shown(kind)})")
        if view_metadata is not None:
            raise RefusedError("a storage view (written by PyTorch < 1.0)")
        if not isinstance(key, str):
            raise RefusedError(f"a storage key {shown(key)}")
        if key not in storages:
            storages[key] = load.new_storage(storage_type, numel)
        return storages[key]

    result = _unpickle(main, path, load, persistent_load=storage)
    for key in key_order:
        if key not in storages:
            raise MalformedError(f"storage {shown(key)} is unused")
        found = storages[key]
        count = (
            struct.unpack_from("<q", data, offset)[0]
            if len(data) >= offset + 8
            else None
        )
        if count != found.numel or len(data) < offset + 8 + found.nbytes:
            raise MalformedError(
                f"storage {shown(key)} is truncated or resized"
            )
        found.data = data[offset + 8 : offset + 8 + found.nbytes]
        offset += 8 + found.nbytes
    return result


def read_torch_file(path, *, max_bytes=None):
    """Unpickles a PyTorch checkpoint with numpy arrays in place of tensors.

    Args:
        path: str or Path. A file written by `torch.save` (zip or legacy).
        max_bytes: int or None. The most memory the file's storages, and
            separately the arrays made from them, may take; None:
            `$KERAS_DEEPLAB_MAX_CHECKPOINT_BYTES`, else 4 GiB.

    Returns:
        The saved object (dicts, lists, numbers, strings) with every tensor
        as a contiguous numpy array of its dtype (bfloat16 as float32).

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: for a file that is not a PyTorch checkpoint, is
            truncated, needs more memory than allowed, or holds anything
            but weights and plain values.
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(
            f"checkpoint {str(path)!r} is a folder; expected a .pth/.pt file "
            "written by torch.save."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; expected a .pth/.pt "
            "file written by torch.save."
        )
    load = TorchLoad(max_bytes=max_checkpoint_bytes(max_bytes))
    try:
        if zipfile.is_zipfile(path):
            result = _read_zip(path, load)
        elif tarfile.is_tarfile(path):
            raise UserInputError(
                f"checkpoint {str(path)!r} is in the tar format of PyTorch < "
                "0.4, which is not read here; load it with that PyTorch and "
                "re-save its state dict with torch.save."
            )
        else:
            result = _read_legacy(path, load)
        load.check_views()
        return materialised(result)
    except UserInputError:
        raise  # already the reader's own message
    except RefusedError as err:
        raise _refused(path, err) from err
    except (
        MalformedError,
        zlib.error,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,  # a zip compression method zipfile lacks
    ) as err:
        raise _unreadable(path, err) from err
    except RecursionError as err:
        raise _refused(path, "objects nested thousands deep") from err
