"""Checkpoint files built opcode by opcode, for what torch.save never writes.

The reader's tests and its fuzz harness (`tests/fuzz_torch_file.py`) need
files with sizes, strides, records and opcodes no real `torch.save` makes
(a view of 2**64 elements, a BUILD on an allow-listed object, a storage
record that inflates a thousandfold). These helpers write the pickle
protocol 2 opcodes and the two container formats by hand; torch is not
needed.
"""

import pickle
import struct
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
PROTO_2 = b"\x80\x02"
STOP = b"."
MARK = b"("
TUPLE = b"t"
REDUCE = b"R"
BUILD = b"b"
SETITEMS = b"u"
EMPTY_DICT = b"}"
EMPTY_TUPLE = b")"
NEWFALSE = b"\x89"
NONE = b"N"
BINPERSID = b"Q"


def op_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    encoded = pickle.encode_long(value)
    return b"\x8a" + bytes([len(encoded)]) + encoded  # LONG1


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_tuple(items) -> bytes:
    return MARK + b"".join(items) + TUPLE


def op_storage(storage_type, key, numel, *, legacy=False) -> bytes:
    """The persistent id of a storage (zip: 5 fields; legacy: 6)."""
    fields = [
        op_str("storage"),
        op_global("torch", storage_type),
        op_str(key),
        op_str("cpu"),
        op_int(numel),
    ]
    return op_tuple(fields + ([NONE] if legacy else [])) + BINPERSID


def op_tensor(
    storage_type, key, numel, *, offset=0, size, stride, legacy=False
) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
    False, OrderedDict())."""
    arguments = [
        op_storage(storage_type, key, numel, legacy=legacy),
        op_int(offset),
        op_tuple(op_int(n) for n in size),
        op_tuple(op_int(n) for n in stride),
        NEWFALSE,
        op_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE,
    ]
    return (
        op_global("torch._utils", "_rebuild_tensor_v2")
        + op_tuple(arguments)
        + REDUCE
    )


def state_dict_pickle(entries: dict) -> bytes:
    """A pickle of {name: the object `entries[name]` (opcodes) makes}."""
    items = b"".join(op_str(name) + value for name, value in entries.items())
    return PROTO_2 + EMPTY_DICT + MARK + items + SETITEMS + STOP


def write_zip(
    path,
    data_pkl: bytes,
    records: dict,
    *,
    byteorder: bytes | None = b"little",
    compression=zipfile.ZIP_STORED,
):
    """A torch.save zip: archive/data.pkl, archive/data/<key> per record."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", b"3\n")
    return path


def legacy_bytes(
    main_pickle: bytes, records: dict, *, sys_info: bytes | None = None
) -> bytes:
    """A pre-1.6 torch.save file: magic, protocol, system info, the object,
    the storage keys, then each storage as its count and bytes. `records`
    maps key -> (numel, data)."""
    if sys_info is None:
        sys_info = pickle.dumps(
            {"protocol_version": LEGACY_PROTOCOL, "little_endian": True},
            protocol=2,
        )
    parts = [
        pickle.dumps(LEGACY_MAGIC, protocol=2),
        pickle.dumps(LEGACY_PROTOCOL, protocol=2),
        sys_info,
        main_pickle,
        pickle.dumps(list(records), protocol=2),
    ]
    for numel, data in records.values():
        parts.append(struct.pack("<q", numel) + data)
    return b"".join(parts)
