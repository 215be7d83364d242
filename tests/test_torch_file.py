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
from keras_deeplab.errors import UserInputError
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
