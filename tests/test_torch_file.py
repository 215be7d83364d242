"""The torch-free checkpoint reader against torch.load itself.

Files are written by real torch (both formats it can write); the reader's
arrays must equal `torch.load(..., weights_only=True)` bit for bit, and
anything but weights must be refused before it can run.
"""

import collections
import io
import os
import tarfile
import zipfile

import numpy as np
import pytest

from keras_deeplab.convert import read_torch_file
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import PicklePayload

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, kind):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[kind])
    return path


def _torch_load(path):
    numpy_globals = [
        np._core.multiarray.scalar,
        np.dtype,
        type(np.dtype("float64")),
    ]
    with torch.serialization.safe_globals(numpy_globals):
        return torch.load(path, weights_only=True)


def _as_numpy(tensor):
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()  # the reader widens bf16 exactly
    return tensor.numpy()


def _state_dict():
    """Every dtype and layout a weights file holds: views with offsets and
    strides, non-contiguous, 0-d, empty, shared storages, bf16."""
    torch.manual_seed(0)
    shared = torch.randn(6)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    )
    state = collections.OrderedDict(model.state_dict())
    state.update(
        {
            "float64": torch.randn(5, dtype=torch.float64),
            "view": torch.arange(10, dtype=torch.int64)[2:8:2],
            "transposed": torch.randn(4, 6).t(),
            "scalar": torch.tensor(3.5),
            "bfloat16": torch.randn(3).to(torch.bfloat16),
            "float16": torch.randn(3).half(),
            "bool": torch.tensor([True, False]),
            "int8": torch.tensor([-3, 4], dtype=torch.int8),
            "empty": torch.zeros(0, 3),
            "shared_a": shared[:3],
            "shared_b": shared[3:],
        }
    )
    return state


@pytest.mark.parametrize("kind", FORMATS)
def test_tensors_equal_torch_load_bit_for_bit(tmp_path, kind):
    path = _save(_state_dict(), tmp_path / "state.pth", kind)
    mine, reference = read_torch_file(path), _torch_load(path)
    assert isinstance(mine, collections.OrderedDict)
    assert list(mine) == list(reference)
    for key, tensor in reference.items():
        expected = _as_numpy(tensor)
        assert mine[key].dtype == expected.dtype, key
        assert mine[key].shape == expected.shape, key
        np.testing.assert_array_equal(mine[key], expected, err_msg=key)


@pytest.mark.parametrize("kind", FORMATS)
def test_vainf_checkpoint_with_numpy_and_optimizer_state(tmp_path, kind):
    """What VainF's main.py saves: weights, optimizer and scheduler state,
    the iteration and a numpy float64 best score."""
    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.ones(1, 3, 2, 2)).sum().backward()
    optimizer.step()
    checkpoint = {
        "cur_itrs": 30000,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "best_score": np.float64(0.769),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }
    path = _save(checkpoint, tmp_path / "best.pth", kind)
    mine, reference = read_torch_file(path), _torch_load(path)
    assert mine["best_score"] == reference["best_score"] == 0.769
    assert mine["cur_itrs"] == 30000
    for key, tensor in reference["model_state"].items():
        np.testing.assert_array_equal(mine["model_state"][key], tensor.numpy())
    buffers = mine["optimizer_state"]["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(
        buffers, reference["optimizer_state"]["state"][0]["momentum_buffer"]
    )
    np.testing.assert_array_equal(mine["parameter"], np.ones(2, np.float32))


@pytest.mark.parametrize("kind", FORMATS)
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "payload-ran"
    path = _save(
        {"weight": torch.ones(2), "x": PicklePayload(marker)},
        tmp_path / "evil.pth",
        kind,
    )
    with pytest.raises(UserInputError, match=r"posix\.system.*nothing was"):
        read_torch_file(path)
    assert not marker.exists()


def test_whole_pickled_modules_and_sparse_tensors_are_refused(tmp_path):
    module = _save(torch.nn.Linear(2, 2), tmp_path / "module.pth", "zip")
    with pytest.raises(UserInputError, match="torch.nn.modules.linear"):
        read_torch_file(module)
    sparse = torch.eye(3).to_sparse()
    path = _save({"weight": sparse}, tmp_path / "sparse.pth", "zip")
    with pytest.raises(UserInputError, match="_rebuild_sparse_tensor"):
        read_torch_file(path)


def test_a_view_reaching_past_its_storage_is_refused(tmp_path):
    """A crafted size must not read memory beyond the storage."""
    path = _save({"w": torch.arange(13.0)}, tmp_path / "w.pth", "zip")
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    (pickle_name,) = [n for n in records if n.endswith("data.pkl")]
    # BININT1 13, TUPLE1: the size (13,) of the tensor -> (200,)
    assert records[pickle_name].count(b"K\r\x85") == 1
    records[pickle_name] = records[pickle_name].replace(
        b"K\r\x85", b"K\xc8\x85"
    )
    crafted = tmp_path / "crafted.pth"
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    with pytest.raises(UserInputError, match="reads past its storage"):
        read_torch_file(crafted)


@pytest.mark.parametrize("kind", FORMATS)
def test_truncated_and_foreign_files_are_named(tmp_path, kind):
    path = _save(_state_dict(), tmp_path / "whole.pth", kind)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError, match="cut.pth.*not a readable"):
        read_torch_file(cut)
    for name, data in (("empty.pth", b""), ("junk.pth", os.urandom(2048))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserInputError, match=f"{name}.*not a readable"):
            read_torch_file(tmp_path / name)


def test_pre_04_tar_files_and_other_zips_say_what_they_are(tmp_path):
    tar_path = tmp_path / "old.pth"
    with tarfile.open(tar_path, "w") as archive:
        payload = b"storages"
        info = tarfile.TarInfo("storages")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    with pytest.raises(UserInputError, match="tar format of PyTorch < 0.4"):
        read_torch_file(tar_path)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserInputError, match="not a torch.save file"):
        read_torch_file(other_zip)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_torch_file(tmp_path / "missing.pth")


# -- the adversarial pass of 2026-12 (probe ids T-...) -----------------------

_FOUR = np.arange(4, dtype=np.float32)


def _clean_file(tmp_path):
    return _save({"w": torch.arange(4.0)}, tmp_path / "clean.pth", "zip")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        # T-P01: BUILD sets bfloat16=True on the shared FloatStorage type.
        (
            "storage",
            b"\x80\x02ctorch\nFloatStorage\n}X\x08\x00\x00\x00bfloat16"
            b"\x88sb0}.",
        ),
        # T-P04: BUILD rewrites the defaults of a rebuild function.
        (
            "function",
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00"
            b"__defaults__)sb0}.",
        ),
    ],
)
def test_a_build_on_an_allow_listed_object_is_refused_and_poisons_nothing(
    tmp_path, name, payload
):
    """A crafted file once changed objects every later read shared: the
    next genuine file read back as [0, 9.2e-41, ...] or was refused."""
    from tests.torch_crafted import write_zip

    crafted = write_zip(tmp_path / f"{name}.pth", payload, {})
    with pytest.raises(UserInputError, match="crafted|BUILD") as refusal:
        read_torch_file(crafted)
    assert f"{name}.pth" in str(refusal.value)
    assert "\n" not in str(refusal.value)
    np.testing.assert_array_equal(
        read_torch_file(_clean_file(tmp_path))["w"], _FOUR
    )


def test_the_second_gate_calls_nothing_but_rebuild_functions(tmp_path):
    """If the scan before unpickling were ever bypassed, the restricted
    builder still calls only its own rebuild functions (T-G01..G05: the
    legacy header pickles were loaded with plain pickle.loads)."""
    import importlib
    import pickle

    from keras_deeplab.convert import restricted_pickle
    from tests.helpers import PicklePayload

    marker = tmp_path / "payload-ran"
    data = pickle.dumps(PicklePayload(marker), protocol=2)

    def anything(module, name):  # what a broken allow-list would give
        return getattr(importlib.import_module(module), name)

    with pytest.raises(restricted_pickle.RefusedError, match="calling"):
        restricted_pickle.load(data, find_class=anything)
    assert not marker.exists()


def test_legacy_header_pickles_go_through_both_gates(tmp_path, monkeypatch):
    """T-G01: a legacy file whose system-info pickle names
    torch.ByteStorage with an argument: refused by the scan, and refused
    again by the builder with the scan switched off; torch never runs."""
    import pickle

    from keras_deeplab.convert import torch_file
    from tests.torch_crafted import legacy_bytes, op_global, op_int

    sys_info = (
        b"\x80\x02"
        + op_global("torch", "ByteStorage")
        + b"("
        + op_int(2**40)
        + b"tR."
    )
    path = tmp_path / "legacy.pth"
    path.write_bytes(
        legacy_bytes(pickle.dumps({}, protocol=2), {}, sys_info=sys_info)
    )
    with pytest.raises(UserInputError, match="torch.ByteStorage"):
        read_torch_file(path)
    monkeypatch.setattr(torch_file, "_check_globals", lambda *args: None)
    with pytest.raises(UserInputError, match="legacy.pth.*torch.ByteStorage"):
        read_torch_file(path)


def test_views_that_copy_far_more_than_the_file_holds_are_refused(tmp_path):
    """T-M01: 12 floats viewed as 40000x25000 with zero strides (3.7 GiB)
    from a 566-byte file; T-M02: one storage viewed a thousand times."""
    from keras_deeplab.utils.memory import peak_rss_mb, reset_peak_rss

    base = torch.arange(12.0)
    zero_strides = _save(
        {"w": base.as_strided((40000, 25000), (0, 0))},
        tmp_path / "zero.pth",
        "zip",
    )
    shared = torch.zeros(1 << 18)  # 1 MiB
    many = _save(
        {f"v{i}": shared[:] for i in range(1000)},
        tmp_path / "many.pth",
        "zip",
    )
    reset_peak_rss()
    before = peak_rss_mb()
    for path in (zero_strides, many):
        with pytest.raises(UserInputError, match="would copy") as refusal:
            read_torch_file(path)
        assert path.name in str(refusal.value)
    if before is not None:
        assert peak_rss_mb() - before < 200
    # One tensor saved under a thousand names is one array, as in torch.
    same = _save(
        {f"v{i}": shared for i in range(1000)}, tmp_path / "same.pth", "zip"
    )
    arrays = read_torch_file(same)
    assert len({id(array) for array in arrays.values()}) == 1


def test_an_inflating_record_or_pickle_is_refused_before_it_is_read(tmp_path):
    """T-M03/M04: a deflated storage record or data.pkl that inflates
    thousands of times (a zip bomb) is refused from its header."""
    from tests.torch_crafted import op_tensor, state_dict_pickle, write_zip

    numel = 50 * 2**20 // 4  # 50 MiB of float zeros, ~50 KB deflated
    data_pkl = state_dict_pickle(
        {"w": op_tensor("FloatStorage", "0", numel, size=(numel,), stride=(1,))}
    )
    bomb = write_zip(
        tmp_path / "bomb.pth",
        data_pkl,
        {"0": bytes(numel * 4)},
        compression=zipfile.ZIP_DEFLATED,
    )
    with pytest.raises(UserInputError, match="bomb.pth.*inflates"):
        read_torch_file(bomb)
    big_pickle = write_zip(
        tmp_path / "pickle.pth",
        b"\x80\x02N" + b"0N" * (40 * 2**20) + b".",
        {},
        compression=zipfile.ZIP_DEFLATED,
    )
    with pytest.raises(UserInputError, match="pickle.pth.*pickle"):
        read_torch_file(big_pickle)


def test_a_storage_record_of_another_size_is_refused(tmp_path):
    from tests.torch_crafted import op_tensor, state_dict_pickle, write_zip

    data_pkl = state_dict_pickle(
        {"w": op_tensor("FloatStorage", "0", 4, size=(4,), stride=(1,))}
    )
    path = write_zip(tmp_path / "short.pth", data_pkl, {"0": bytes(12)})
    with pytest.raises(UserInputError, match="short.pth.*12 bytes.*16"):
        read_torch_file(path)


@pytest.mark.parametrize(
    ("size", "stride", "message"),
    [
        ((2**40, 2**40), (0, 0), "would copy|memory limit"),  # T-X01
        ((2**64,), (1,), "size"),  # T-X02
        ((2**62, 2**62, 0), (1, 1, 1), "size"),  # T-X03
        ((4,), (-1,), "size"),
    ],
)
def test_absurd_shapes_are_one_line(tmp_path, size, stride, message):
    from tests.torch_crafted import op_tensor, state_dict_pickle, write_zip

    data_pkl = state_dict_pickle(
        {"w": op_tensor("FloatStorage", "0", 4, size=size, stride=stride)}
    )
    path = write_zip(tmp_path / "shape.pth", data_pkl, {"0": bytes(16)})
    with pytest.raises(UserInputError, match=message) as refusal:
        read_torch_file(path)
    assert "shape.pth" in str(refusal.value)


@pytest.mark.parametrize("byteorder", [b"middle", b"\xff\xfe", b"x" * 100])
def test_a_byteorder_other_than_little_or_big_is_refused(tmp_path, byteorder):
    """T-X04, T-S01: `middle` was read as big-endian (garbage weights,
    exit 0); bytes that are not UTF-8 were a traceback."""
    from tests.torch_crafted import op_tensor, state_dict_pickle, write_zip

    data_pkl = state_dict_pickle(
        {"w": op_tensor("FloatStorage", "0", 4, size=(4,), stride=(1,))}
    )
    path = write_zip(
        tmp_path / "order.pth",
        data_pkl,
        {"0": _FOUR.tobytes()},
        byteorder=byteorder,
    )
    with pytest.raises(UserInputError, match="order.pth.*byteorder"):
        read_torch_file(path)
    big = write_zip(
        tmp_path / "big.pth",
        data_pkl,
        {"0": _FOUR.astype(">f4").tobytes()},
        byteorder=b"big",
    )
    np.testing.assert_array_equal(read_torch_file(big)["w"], _FOUR)


def test_the_memory_limit_can_be_raised_for_a_trusted_file(
    tmp_path, monkeypatch
):
    path = _save({"w": torch.zeros(1 << 20)}, tmp_path / "four_mib.pth", "zip")
    with pytest.raises(UserInputError, match="four_mib.pth.*max_bytes"):
        read_torch_file(path, max_bytes=2**20)
    monkeypatch.setenv("KERAS_DEEPLAB_MAX_CHECKPOINT_BYTES", str(2**20))
    with pytest.raises(UserInputError, match="limit"):
        read_torch_file(path)
    assert read_torch_file(path, max_bytes=8 * 2**20)["w"].shape == (1 << 20,)
    monkeypatch.setenv("KERAS_DEEPLAB_MAX_CHECKPOINT_BYTES", "lots")
    with pytest.raises(UserInputError, match="MAX_CHECKPOINT_BYTES='lots'"):
        read_torch_file(path)
