"""The notebooks are committed without outputs and run end to end (small)."""

import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PARAMETERS_TAG = "parameters"  # the papermill convention
_TINY_MODEL = {"BACKBONE_WIDTH": 8, "HEAD_FILTERS": 16, "OUT_DIR": "out"}
# Overrides injected after each notebook's parameters cell, as papermill does.
CI_PARAMETERS = {
    "01_quickstart_model_fit": {
        **_TINY_MODEL,
        "IMAGE_SIZE": 64,
        "ATROUS_RATES": (1, 2, 3),
        "BATCH_SIZE": 4,
        "EPOCHS": 2,
        "STEPS_PER_EPOCH": 3,
        "TRAIN_IMAGES": 24,
        "VAL_IMAGES": 8,
    },
    "02_finetune_your_data": {
        **_TINY_MODEL,
        "DATA_DIR": "out/my_data",
        "IMAGE_SIZE": 64,
        "TRAIN_IMAGES": 16,
        "VAL_IMAGES": 8,
        "IMAGENET_WEIGHTS": None,
        "BATCH_SIZE": 4,
        "EPOCHS": 1,
        "STEPS_PER_EPOCH": 3,
    },
    "03_export_serve_mobile": {
        "OUT_DIR": "out",  # LR-ASPP MobileNetV3 is small at full width
        "EXPORT_SIZE": 64,
        "TRAIN_IMAGES": 24,
        "EPOCHS": 1,
        "STEPS_PER_EPOCH": 3,
        "CALIBRATION_IMAGES": 4,
        "VERIFY_IMAGES": 4,
    },
}
FIGURES = {
    "01_quickstart_model_fit": (
        "samples.png",
        "training_curves.png",
        "class_iou.png",
        "predictions.png",
        "deeplabv3plus_curves.png",
    ),
    "02_finetune_your_data": ("finetune_curves.png", "os8_predictions.png"),
    "03_export_serve_mobile": ("latency_size.png", "int8_disagreement.png"),
}


def _parameters_cells(notebook):
    return [
        index
        for index, cell in enumerate(notebook.cells)
        if PARAMETERS_TAG in cell.metadata.get("tags", [])
    ]


def test_every_notebook_has_ci_parameters():
    assert [path.stem for path in NOTEBOOKS] == sorted(CI_PARAMETERS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_has_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs for cell in code), "outputs must be stripped"
    assert all(cell.execution_count is None for cell in code)
    (index,) = _parameters_cells(notebook)
    names = {
        line.split("=")[0].strip() for line in _assignments(notebook, index)
    }
    assert set(CI_PARAMETERS[path.stem]) <= names


def _assignments(notebook, index):
    return [
        line
        for line in notebook.cells[index].source.splitlines()
        if "=" in line and not line.startswith("#")
    ]


def _with_ci_parameters(notebook, values):
    index = _parameters_cells(notebook)[0]
    source = (
        "# Injected by tests/test_notebooks.py: CI parameters\n"
        + "\n".join(f"{name} = {value!r}" for name, value in values.items())
    )
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(path, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    notebook = _with_ci_parameters(
        nbformat.read(path, as_version=4), CI_PARAMETERS[path.stem]
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{path.stem}: executed in {time.perf_counter() - start:.0f} s")
    for name in FIGURES[path.stem]:
        figure = tmp_path / "out" / "figures" / name
        assert figure.read_bytes()[:4] == b"\x89PNG", figure
