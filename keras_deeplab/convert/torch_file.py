"""PyTorch checkpoint files read without PyTorch: tensors become numpy arrays.

A `.pth` file is a pickle whose tensors point at raw storages: inside a zip
archive (`torch.save` since PyTorch 1.6, 2020) or appended after the pickle
(the legacy format of earlier releases, which torchvision's 2019 DeepLabV3
files and many research checkpoints still use). Both are read here.

Unpickling runs code named by the file, so only what a file of weights needs
is accepted: tensor and parameter rebuilding, storages, `OrderedDict`, and the
numpy scalars and dtypes some training scripts store beside the weights (e.g.
VainF's `best_score`). The whole pickle is scanned first and any other global
is refused, listed, before anything is unpickled; the unpickler refuses them
again as a second gate. Tensor views are bounds-checked against their storage.
The tar format of PyTorch < 0.4, sparse and quantized tensors, and whole
pickled `nn.Module`s are refused with a message saying so.
"""

import collections
import io
import pickle
import pickletools
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from keras_deeplab.errors import UserInputError

# torch storage class -> numpy dtype (bfloat16 is widened to float32).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_PICKLE = "data.pkl"
_MAX_LISTED = 8


class _StorageType:
    """Stands for a torch storage class (`torch.FloatStorage`, ...)."""

    def __init__(self, name):
        self.name = name
        dtype = _STORAGE_DTYPES[name]
        self.bfloat16 = dtype == "bfloat16"
        self.dtype = np.dtype(np.uint16 if self.bfloat16 else dtype)


class _Storage:
    """One storage of a checkpoint: its element type, count and raw bytes
    (the legacy format attaches them after the pickle is read)."""

    def __init__(self, storage_type, numel, data=None):
        if not isinstance(numel, int) or numel < 0:
            raise _RefusedError(f"a storage of {numel!r} elements")
        self.type = storage_type
        self.numel = numel
        self.data = data

    def array(self):
        """The elements as a flat numpy array."""
        nbytes = self.numel * self.type.dtype.itemsize
        if self.data is None or len(self.data) != nbytes:
            size = "no" if self.data is None else len(self.data)
            raise _RefusedError(
                f"a storage of {self.numel} elements with {size} bytes of data"
            )
        array = np.frombuffer(self.data, self.type.dtype)
        if self.type.bfloat16:
            # bfloat16 is the upper half of a float32.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


class _TensorRef:
    """A tensor's place in its storage, read once every storage is known."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            kind = type(storage).__name__
            raise _RefusedError(f"a tensor rebuilt from {kind}")
        size, stride = tuple(size), tuple(stride)
        if (
            len(size) != len(stride)
            or not all(isinstance(n, int) for n in (*size, *stride, offset))
            or min((*size, *stride, offset), default=0) < 0
        ):
            raise _RefusedError(f"a tensor of size {size} and stride {stride}")
        self.storage, self.offset = storage, offset
        self.size, self.stride = size, stride

    def array(self):
        """A contiguous copy, checked to lie inside its storage."""
        flat = self.storage.array()
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        pairs = zip(self.size, self.stride, strict=True)
        last = self.offset + sum((n - 1) * s for n, s in pairs)
        if last >= flat.size:
            raise _RefusedError(
                f"a tensor of size {self.size} that reads past its storage "
                f"of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=[s * flat.itemsize for s in self.stride],
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(
    storage, offset, size, stride, requires_grad, hooks, metadata=None
):
    del requires_grad, hooks  # autograd state, not part of a weight
    if metadata:
        raise _RefusedError("a tensor with conjugate or negative bits")
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    del requires_grad, hooks
    if state:
        raise _RefusedError("a parameter with extra Python state")
    return data


def _rebuild_from_type(function, new_type, args, state):
    # What `torch.save` writes for a tensor subclass or a tensor with
    # attributes; only plain tensors and parameters are weights.
    if new_type not in (_TENSOR, _PARAMETER) or state:
        raise _RefusedError("a tensor subclass or a tensor with attributes")
    return function(*args)


_TENSOR, _PARAMETER = object(), object()  # torch.Tensor, nn.Parameter markers


def _numpy_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar: one number from its bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _RefusedError(f"a numpy scalar of {dtype!r}")
    return np.frombuffer(data or b"", dtype, count=1)[0]


def _latin1_bytes(text, encoding):
    """_codecs.encode: how pickle protocol 2 stores a bytes object."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _RefusedError(f"an encoded string ({encoding!r})")
    return text.encode("latin1")


def _allowed_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Tensor"): _TENSOR,
        ("torch.nn.parameter", "Parameter"): _PARAMETER,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = _numpy_scalar
    for name in _STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType(name)
    return allowed


_ALLOWED = _allowed_globals()


class _RefusedError(Exception):
    """Something a file of weights never holds."""


_STRING_PUSHES = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8")
_MEMO_GETS = ("GET", "BINGET", "LONG_BINGET")
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def _referenced_globals(data):
    """The dotted names of every global the pickle refers to.

    GLOBAL and INST carry their name; STACK_GLOBAL takes it from the two
    strings pushed just before it (directly or from the memo). A name that
    cannot be read off the opcodes is reported as computed, and refused.
    """
    found, memo = [], {}
    previous = None  # the string the last pushing opcode pushed, or None
    strings = []  # strings pushed by consecutive opcodes, most recent last
    for opcode, argument, _ in pickletools.genops(data):
        name = opcode.name
        if name in _MEMO_PUTS or name == "MEMOIZE":
            key = len(memo) if name == "MEMOIZE" else argument
            memo[key] = previous
            continue
        if name in ("GLOBAL", "INST"):
            found.append(argument.replace(" ", "."))
        elif name == "STACK_GLOBAL":
            found.append(
                ".".join(strings[-2:])
                if len(strings) >= 2
                else "<a global with a computed name>"
            )
        elif name in ("EXT1", "EXT2", "EXT4", "OBJ"):
            found.append(f"<{name} opcode>")
        if name in _STRING_PUSHES:
            previous = argument
        elif name in _MEMO_GETS:
            previous = memo.get(argument)
        else:
            previous = None
        strings = strings + [previous] if previous is not None else []
    return found


def _check_globals(data, path):
    try:
        names = set(_referenced_globals(data))
    except (ValueError, EOFError) as err:  # what genops raises on junk
        raise _unreadable(path, err) from err
    refused = sorted(names - {".".join(key) for key in _ALLOWED})
    if refused:
        shown = ", ".join(refused[:_MAX_LISTED])
        raise UserInputError(
            f"checkpoint {str(path)!r} is refused: its pickle names "
            f"{len(refused)} Python objects a file of weights never needs "
            f"({shown}); nothing was unpickled. Expected tensors saved by "
            "torch.save(model.state_dict(), path)."
        )


class _Unpickler(pickle.Unpickler):
    """Accepts only the allowlisted globals; `storage(*id)` makes storages."""

    def __init__(self, data, *, storage):
        super().__init__(io.BytesIO(data))
        self._storage = storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedError(f"the Python object {module}.{name}") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise _RefusedError(f"a persistent object {kind!r} (not a storage)")
        return self._storage(*pid[1:])


def _unpickle(data, path, storage):
    _check_globals(data, path)
    try:
        return _Unpickler(data, storage=storage).load()
    except _RefusedError as err:
        raise _refused(path, err) from err
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as err:
        raise _unreadable(path, err) from err


def _refused(path, err):
    return UserInputError(
        f"checkpoint {str(path)!r} is refused: it holds {err}, which a file "
        "of weights never needs."
    )


def _unreadable(path, err):
    return UserInputError(
        f"checkpoint {str(path)!r} is not a readable PyTorch file "
        f"({type(err).__name__}: {str(err)[:200]}); expected a file written "
        "by torch.save(model.state_dict(), path)."
    )


def _storage_type(storage_type):
    if not isinstance(storage_type, _StorageType):
        raise _RefusedError(f"a storage of type {storage_type!r}")
    return storage_type


def _materialised(value):
    """`value` with every tensor reference replaced by its array."""
    if isinstance(value, _TensorRef):
        return value.array()
    if isinstance(value, dict):
        items = [(key, _materialised(item)) for key, item in value.items()]
        return type(value)(items)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialised(item) for item in value)
    return value


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [
            name
            for name in names
            if name.endswith("/" + _ZIP_PICKLE) and name.count("/") == 1
        ]
        if len(pickles) != 1:
            raise UserInputError(
                f"checkpoint {str(path)!r} is a zip file without one "
                f"<name>/{_ZIP_PICKLE} record ({len(pickles)} found): not a "
                "torch.save file (a TorchScript archive or another zip)."
            )
        prefix = pickles[0][: -len(_ZIP_PICKLE)]
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        storages = {}

        def storage(storage_type, key, location, numel):
            del location  # every tensor is read to the CPU
            storage_type = _storage_type(storage_type)
            record = f"{prefix}data/{key}"
            if record not in names:
                raise _RefusedError(f"a tensor without its data record {key!r}")
            if key not in storages:
                data = _from_byteorder(
                    archive.read(record), storage_type, byteorder
                )
                storages[key] = _Storage(storage_type, numel, data)
            return storages[key]

        return _unpickle(archive.read(pickles[0]), path, storage)


def _from_byteorder(data, storage_type, byteorder):
    if byteorder == "little" or storage_type.dtype.itemsize == 1:
        return data
    big_endian = storage_type.dtype.newbyteorder(">")
    return np.frombuffer(data, big_endian).astype(storage_type.dtype).tobytes()


def _next_pickle(data, offset):
    """The bytes of the pickle starting at `offset` (read, never loaded)."""
    handle = io.BytesIO(data)
    handle.seek(offset)
    for opcode, _, _ in pickletools.genops(handle):
        if opcode.name == "STOP":
            return data[offset : handle.tell()]
    raise EOFError("a pickle without its STOP opcode")


def _read_legacy(path, data):
    """Legacy format: pickles of the magic number, the protocol, system info,
    the object and its storage keys, then each storage's raw data."""
    parts, offset = [], 0
    try:
        for _ in range(5):
            parts.append(_next_pickle(data, offset))
            offset += len(parts[-1])
    except (ValueError, EOFError) as err:
        raise _unreadable(path, err) from err
    magic, protocol, sys_info, main, keys = parts
    for part in (magic, protocol, sys_info, keys):
        _check_globals(part, path)  # plain values: no global may appear
    if (pickle.loads(magic), pickle.loads(protocol)) != (
        _LEGACY_MAGIC,
        _LEGACY_PROTOCOL,
    ):
        raise _unreadable(path, ValueError("no PyTorch magic number"))
    info, key_order = pickle.loads(sys_info), pickle.loads(keys)
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise UserInputError(
            f"checkpoint {str(path)!r} was written on a big-endian machine in "
            "the legacy format; re-save it with a current torch.save."
        )
    storages = {}

    def storage(storage_type, key, location, numel, view_metadata=None):
        del location
        if view_metadata is not None:
            raise _RefusedError("a storage view (written by PyTorch < 1.0)")
        if key not in storages:
            storages[key] = _Storage(_storage_type(storage_type), numel)
        return storages[key]

    result = _unpickle(main, path, storage)
    for key in key_order:
        if key not in storages:
            raise _unreadable(path, KeyError(f"storage {key!r} is unused"))
        storage = storages[key]
        nbytes = storage.numel * storage.type.dtype.itemsize
        count = (
            struct.unpack_from("<q", data, offset)[0]
            if len(data) >= offset + 8
            else None
        )
        if count != storage.numel or len(data) < offset + 8 + nbytes:
            raise _unreadable(
                path, EOFError(f"storage {key!r} is truncated or resized")
            )
        storage.data = data[offset + 8 : offset + 8 + nbytes]
        offset += 8 + nbytes
    return result


def read_torch_file(path):
    """Unpickles a PyTorch checkpoint with numpy arrays in place of tensors.

    Args:
        path: str or Path. A file written by `torch.save` (zip or legacy).

    Returns:
        The saved object (dicts, lists, numbers, strings) with every tensor
        as a contiguous numpy array of its dtype (bfloat16 as float32).

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: for a file that is not a PyTorch checkpoint, is
            truncated, or holds anything but weights and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; expected a .pth/.pt "
            "file written by torch.save."
        )
    try:
        if zipfile.is_zipfile(path):
            result = _read_zip(path)
        elif tarfile.is_tarfile(path):
            raise UserInputError(
                f"checkpoint {str(path)!r} is in the tar format of PyTorch < "
                "0.4, which is not read here; load it with that PyTorch and "
                "re-save its state dict with torch.save."
            )
        else:
            result = _read_legacy(path, path.read_bytes())
        return _materialised(result)
    except _RefusedError as err:
        raise _refused(path, err) from err
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise _unreadable(path, err) from err
    except RecursionError as err:
        raise _refused(path, "objects nested thousands deep") from err
