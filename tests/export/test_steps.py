"""`export_all` with each step in a process of its own (export.steps): each
step logged with the memory of its process, errors raised as themselves, a
killed process reported in one line, and every existing file refused first."""

import re
import subprocess
import sys

import numpy as np
import pytest

from keras_deeplab.export import steps
from keras_deeplab.export.export_all import export_all
from keras_deeplab.export.layout import TFLITE_PRECISIONS
from keras_deeplab.utils.errors import UserInputError
from tests.export.conftest import EXPORT_LOGS, SIZE
from tests.helpers import random_images

pytest.importorskip("tf2onnx")
pytest.importorskip("openvino")

pytestmark = [pytest.mark.xdist_group("exports"), pytest.mark.slow]


@pytest.mark.slow
def test_each_step_is_logged_with_the_memory_of_its_process(model, exported):
    """The session export (conftest.py) runs the ResNet model's steps each
    in a process of its own, the MobileNetV3 model's in process; the
    parity tests check the files of both."""
    _, paths = exported
    tflite = {f"deeplab_{precision}_{SIZE}" for precision in TFLITE_PRECISIONS}
    assert paths.keys() == {
        "saved_model v1",
        *tflite,
        "deeplab_fp32_anysize",
        "deeplab.onnx",
        "deeplab_int8.onnx",
        "deeplab.xml",
    }
    lines = EXPORT_LOGS[model.name]
    announced = [line for line in lines if line.startswith("writing ")]
    costs = [line for line in lines if line.startswith("  ")]
    assert len(announced) == len(costs) == len(paths)
    separate = "resnet" in model.name
    for line in costs:
        assert re.search(r"\(\d+\.\d s, peak memory \d+\.\d GB", line), line
        assert ("in its own process + " in line) == separate, line


def test_a_step_error_is_raised_as_itself_with_its_message(tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    with pytest.raises(UserInputError, match="broken.keras.*not a .keras"):
        steps.run(
            "onnx",
            separate_process=True,
            model=str(broken),
            path=str(tmp_path / "model.onnx"),
            metadata={},
        )
    assert not (tmp_path / "model.onnx").exists()


def test_a_killed_step_process_is_one_clear_error(monkeypatch):
    real_run = subprocess.run

    def killed_by_the_kernel(command, **kwargs):
        suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        return real_run([sys.executable, "-c", suicide], check=False)

    monkeypatch.setattr(steps.subprocess, "run", killed_by_the_kernel)
    with pytest.raises(steps.StepProcessKilledError) as caught:
        steps.run(
            "onnx_int8",
            separate_process=True,
            source="deeplab.onnx",
            path="deeplab_int8.onnx",
            images=[np.zeros((3, 3, 3), np.float32)],
        )
    message = str(caught.value)
    assert "'onnx_int8'" in message and "SIGKILL" in message
    assert "out-of-memory" in message and "nothing half-written" in message


def test_every_existing_artefact_is_refused_before_anything_is_written(
    model, tmp_path
):
    onnx_file = tmp_path / "onnx" / "deeplab.onnx"
    onnx_file.parent.mkdir()
    onnx_file.write_bytes(b"an earlier export")
    with pytest.raises(FileExistsError, match="deeplab.onnx"):
        export_all(
            model,
            tmp_path,
            size=SIZE,
            representative_images=list(random_images(1, SIZE, SIZE)),
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "deeplab.onnx",
        "onnx",
    ]
