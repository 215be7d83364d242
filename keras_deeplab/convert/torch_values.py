"""What a PyTorch checkpoint's pickle may build, for one read, with limits.

A `TorchLoad` is made for each file read: its `find_class` table (fresh
`Rebuild` objects bound to it, immutable storage types and markers) is
what `restricted_pickle.load` may name and call: tensor and parameter
rebuilding, storages, `OrderedDict`, and the numpy scalars and dtypes some
training scripts store beside the weights (e.g. VainF's `best_score`).
Every storage and tensor view is checked before anything is allocated: a
storage's size against the memory limit, a view's extent against its
storage, and the bytes all views would copy against the limit and against
twice the bytes the file's storages hold.
"""

import collections
import dataclasses
import math
import re

import numpy as np

from keras_deeplab.convert.restricted_pickle import (
    MalformedError,
    Marker,
    Rebuild,
    RefusedError,
    shown,
)


@dataclasses.dataclass(frozen=True, slots=True)
class StorageType:
    """A torch storage class (`torch.FloatStorage`, ...): its element type
    as stored (bfloat16 as uint16, widened to float32 when read)."""

    name: str
    dtype: np.dtype
    bfloat16: bool = False


STORAGE_TYPES = {
    storage.name: storage
    for storage in (
        StorageType("DoubleStorage", np.dtype(np.float64)),
        StorageType("FloatStorage", np.dtype(np.float32)),
        StorageType("HalfStorage", np.dtype(np.float16)),
        StorageType("BFloat16Storage", np.dtype(np.uint16), bfloat16=True),
        StorageType("LongStorage", np.dtype(np.int64)),
        StorageType("IntStorage", np.dtype(np.int32)),
        StorageType("ShortStorage", np.dtype(np.int16)),
        StorageType("CharStorage", np.dtype(np.int8)),
        StorageType("ByteStorage", np.dtype(np.uint8)),
        StorageType("BoolStorage", np.dtype(np.bool_)),
    )
}
_TENSOR = Marker("torch.Tensor")
_PARAMETER = Marker("torch.nn.parameter.Parameter")
# numpy dtypes a scalar beside the weights may have: bool, ints, floats.
_SCALAR_DTYPE = re.compile(r"[biufc]\d{1,2}")
_BYTE_ORDERS = ("<", ">", "|", "=")
_MAX_DIMS = 32
_MAX_SIDE = 2**40
# Views may copy at most this many times the bytes the storages hold (a
# tensor saved twice, tied weights), or this much for a tiny file.
VIEW_ALLOWANCE = 2
SMALL_FILE_BYTES = 1 << 20


def _is_int(value):
    return type(value) is int  # not bool, not a numpy integer


class Storage:
    """One storage of a checkpoint: its type, element count and raw bytes
    (the legacy format attaches them after the pickle is read)."""

    def __init__(self, storage_type, numel, data=None):
        self.type, self.numel, self.data = storage_type, numel, data

    @property
    def nbytes(self):
        return self.numel * self.type.dtype.itemsize

    def array(self):
        """The elements as a flat numpy array."""
        if self.data is None or len(self.data) != self.nbytes:
            size = "no" if self.data is None else len(self.data)
            raise MalformedError(
                f"a storage of {self.numel} elements has {size} bytes of data"
            )
        array = np.frombuffer(self.data, self.type.dtype)
        if self.type.bfloat16:
            # bfloat16 is the upper half of a float32.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


class TensorRef:
    """A tensor's place in its storage, checked to lie inside it; read once
    every storage's bytes are known."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = size, stride

    def array(self):
        """A contiguous copy."""
        flat = self.storage.array()
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=[s * flat.itemsize for s in self.stride],
            writeable=False,
        )
        return np.array(view)


class _DtypeSpec:
    """`numpy.dtype(...)` as a pickle makes it: its byte order arrives
    afterwards in a BUILD."""

    def __init__(self, spec, align=False, copy=True):
        del align, copy
        if not isinstance(spec, str) or not _SCALAR_DTYPE.fullmatch(spec):
            raise RefusedError(f"a numpy dtype {shown(spec)}")
        self.spec, self.byteorder = spec, "="

    def dtype(self):
        return np.dtype(self.spec).newbyteorder(self.byteorder)


class TorchLoad:
    """The rules and the limits of one checkpoint read."""

    def __init__(self, *, max_bytes):
        self.max_bytes = max_bytes
        self.storage_bytes = 0  # bytes the storages hold
        self.view_bytes = 0  # bytes all views copy, as stored
        self.output_bytes = 0  # bytes all views allocate (bfloat16 widened)
        self.table = self._table()

    def _table(self):
        rebuild_tensor = Rebuild(self.rebuild_tensor, "_rebuild_tensor_v2")
        rebuild_parameter = Rebuild(self.rebuild_parameter, "Parameter")
        table = {
            ("collections", "OrderedDict"): Rebuild(_ordered_dict, "dict"),
            ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
            (
                "torch._utils",
                "_rebuild_parameter_with_state",
            ): rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): Rebuild(
                _rebuild_from_type, "_rebuild_from_type_v2"
            ),
            ("torch", "Tensor"): _TENSOR,
            ("torch.nn.parameter", "Parameter"): _PARAMETER,
            ("numpy", "dtype"): Rebuild(_DtypeSpec, "numpy.dtype"),
            ("_codecs", "encode"): Rebuild(_latin1_bytes, "_codecs.encode"),
        }
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            table[(module, "scalar")] = Rebuild(_numpy_scalar, "scalar")
        for name, storage_type in STORAGE_TYPES.items():
            table[("torch", name)] = storage_type
        return table

    def allowed_names(self):
        return {".".join(key) for key in self.table}

    def find_class(self, module, name):
        try:
            return self.table[(module, name)]
        except KeyError:
            raise RefusedError(f"the Python object {module}.{name}") from None

    @staticmethod
    def build(target, state):
        """BUILD on what this load made: an `OrderedDict`'s attributes (a
        state dict's `_metadata`, not needed) are dropped; a dtype takes
        its byte order; anything else is refused."""
        if isinstance(target, collections.OrderedDict) and isinstance(
            state, dict | type(None)
        ):
            return
        if (
            isinstance(target, _DtypeSpec)
            and isinstance(state, tuple)
            and len(state) >= 5
            and state[1] in _BYTE_ORDERS
            and state[2:5] == (None, None, None)
        ):
            target.byteorder = state[1]
            return
        raise RefusedError(f"setting the state of {type(target).__name__}")

    def new_storage(self, storage_type, numel, data=None) -> Storage:
        """A storage, refused before its bytes are read when its size is
        not a count or passes the limit."""
        if not isinstance(storage_type, StorageType):
            raise RefusedError(f"a storage of type {shown(storage_type)}")
        if not _is_int(numel) or not 0 <= numel <= _MAX_SIDE:
            raise RefusedError(f"a storage of {shown(numel)} elements")
        storage = Storage(storage_type, numel, data)
        self._count("storage_bytes", storage.nbytes, "its storages")
        return storage

    def _count(self, total, nbytes, what):
        setattr(self, total, getattr(self, total) + nbytes)
        if getattr(self, total) > self.max_bytes:
            raise LimitError(
                f"{what} need more than {self.max_bytes:,} bytes (the memory "
                "limit of the reader)"
            )

    def rebuild_tensor(
        self, storage, offset, size, stride, requires_grad, hooks, meta=None
    ):
        """torch._utils._rebuild_tensor_v2: a checked view of a storage."""
        del requires_grad, hooks  # autograd state, not part of a weight
        if meta:
            raise RefusedError("a tensor with conjugate or negative bits")
        if not isinstance(storage, Storage):
            raise RefusedError(
                f"a tensor rebuilt from {type(storage).__name__}"
            )
        if not (isinstance(size, tuple) and isinstance(stride, tuple)):
            raise RefusedError("a tensor whose size or stride is no tuple")
        numbers = (*size, *stride, offset)
        if (
            len(size) != len(stride)
            or len(size) > _MAX_DIMS
            or not all(_is_int(n) and 0 <= n <= _MAX_SIDE for n in numbers)
        ):
            # Shown only now that each is known to be an int, or by type.
            size, stride = (
                tuple(n if _is_int(n) else shown(n) for n in dims)[:_MAX_DIMS]
                for dims in (size, stride)
            )
            raise RefusedError(f"a tensor of size {size} and stride {stride}")
        count = math.prod(size)
        if count:
            pairs = zip(size, stride, strict=True)
            extent = offset + sum((n - 1) * s for n, s in pairs)
            if extent >= storage.numel:
                raise RefusedError(
                    f"a tensor of size {size} that reads past its storage of "
                    f"{storage.numel} elements"
                )
        itemsize = storage.type.dtype.itemsize
        self._count("view_bytes", count * itemsize, "its tensors")
        widened = 4 if storage.type.bfloat16 else itemsize
        self._count("output_bytes", count * widened, "its tensors")
        return TensorRef(storage, offset, size, stride)

    @staticmethod
    def rebuild_parameter(data, requires_grad, hooks, state=None):
        del requires_grad, hooks
        if state:
            raise RefusedError("a parameter with extra Python state")
        if not isinstance(data, TensorRef):
            raise RefusedError(f"a parameter of {type(data).__name__}")
        return data

    def check_views(self):
        """Refuses views that together copy far more than the storages
        hold (one small storage viewed a thousand times, zero strides)."""
        allowed = max(VIEW_ALLOWANCE * self.storage_bytes, SMALL_FILE_BYTES)
        if self.view_bytes > allowed:
            raise LimitError(
                f"its tensors would copy {self.view_bytes:,} bytes from "
                f"{self.storage_bytes:,} bytes of storage (at most "
                f"{VIEW_ALLOWANCE}x are read)"
            )


class LimitError(RefusedError):
    """A file that would need more memory than the reader allows."""


def _ordered_dict(*items):
    if items and not (len(items) == 1 and isinstance(items[0], list)):
        raise RefusedError("an OrderedDict from something other than pairs")
    return collections.OrderedDict(*items)


def _rebuild_from_type(function, new_type, args, state):
    # What `torch.save` writes for a tensor subclass or a tensor with
    # attributes; only plain tensors and parameters are weights.
    if new_type not in (_TENSOR, _PARAMETER) or state:
        raise RefusedError("a tensor subclass or a tensor with attributes")
    if not isinstance(function, Rebuild) or not isinstance(args, tuple):
        raise RefusedError("a tensor rebuilt by an unknown function")
    return function.function(*args)


def _numpy_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar: one number from its bytes."""
    if not isinstance(dtype, _DtypeSpec) or not isinstance(data, bytes):
        raise RefusedError(f"a numpy scalar of {type(dtype).__name__}")
    dtype = dtype.dtype()
    if len(data) != dtype.itemsize:
        raise MalformedError(f"a {dtype} scalar of {len(data)} bytes")
    return np.frombuffer(data, dtype, count=1)[0]


def _latin1_bytes(text, encoding):
    """_codecs.encode: how pickle protocol 2 stores a bytes object."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedError(f"an encoded string ({shown(encoding)})")
    return text.encode("latin1")


_PLAIN = (str, bytes, int, float, bool, type(None), np.generic, np.ndarray)


def materialised(value, done=None):
    """`value` with every tensor reference replaced by its array.

    Each object the pickle refers to many times (its memo) is converted
    once and shared, as torch.load shares it: a tensor becomes one array,
    so the bytes its views were counted for are the bytes allocated, and a
    container holding another twice, thirty levels deep (a few hundred
    bytes of pickle), stays that small instead of 2**30 copies.
    """
    done = {} if done is None else done
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, set | frozenset):
        return value  # members were checked to be scalars when made
    if not isinstance(value, TensorRef | dict | list | tuple):
        # A storage type, a rebuild function or a marker on its own: the
        # pickle's machinery, never a value a checkpoint holds.
        raise RefusedError(f"a {type(value).__name__} as a value")
    if id(value) in done:
        return done[id(value)]
    if isinstance(value, TensorRef):
        result = value.array()
    elif isinstance(value, dict):
        items = [(key, materialised(item, done)) for key, item in value.items()]
        result = type(value)(items)
    else:
        result = type(value)(materialised(item, done) for item in value)
    done[id(value)] = result
    return result
