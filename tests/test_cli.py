"""Command line: every subcommand's happy path and its user-error paths."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_deeplab.cli import main
from keras_deeplab.data.synthetic import synthetic_sample
from keras_deeplab.labels import SYNTHETIC_CLASSES
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.visualize import masks as visualize
from tests.data.fixtures import make_folder_dataset, write_mask
from tests.helpers import assert_loads_with_plain_keras
from tests.training.tiny import TINY_TRAIN

REPO_ROOT = Path(__file__).resolve().parents[1]
SETS = [arg for item in TINY_TRAIN for arg in ("--set", item)]


def _error_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("cli_run")
    assert main(["train", "demo", "--work-dir", str(work_dir), *SETS]) == 0
    return work_dir


@pytest.mark.slow
def test_train_writes_best_model(trained_dir):
    assert (trained_dir / "best.keras").is_file()
    assert (
        json.loads((trained_dir / "config.json").read_text())["backbone_width"]
        == 4
    )


@pytest.mark.slow
def test_evaluate_prints_metrics_and_writes_a_report(
    trained_dir, capsys, tmp_path
):
    code = main(
        [
            "evaluate",
            "demo",
            "--weights",
            str(trained_dir / "best.keras"),
            *SETS,
            "--set",
            "eval_scales=[0.75, 1.0]",
            "--set",
            "eval_flip=true",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    miou = float(re.search(r"^mIoU ([0-9.]+), mDice ", out, re.M)[1])
    assert 0.0 <= miou <= 1.0
    # One line per class, named by the model (the demo preset's names):
    # IoU, accuracy, precision, Dice, boundary IoU, labelled pixels.
    for name in SYNTHETIC_CLASSES:
        row = rf"^  {name} +((-|[0-9.]+) +){{5}}[0-9,]+$"
        assert re.search(row, out, re.M), name
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["mean_iou"] == pytest.approx(miou, abs=1e-3)
    assert report["class_names"] == list(SYNTHETIC_CLASSES)
    rows = (tmp_path / "report" / "per_class.csv").read_text().splitlines()
    assert rows[0].startswith("class_id,class,iou,accuracy,precision,dice")
    assert len(rows) == 1 + len(SYNTHETIC_CLASSES)
    picture = tmp_path / "report" / "confusion_matrix.png"
    assert picture.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_predict_writes_mask_overlay_and_probabilities(trained_dir, tmp_path):
    image, _ = synthetic_sample(0, size=40)
    path = tmp_path / "in" / "shapes.png"
    path.parent.mkdir()
    Image.fromarray(image).save(path)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            "--weights",
            str(trained_dir / "best.keras"),
            str(path),
            "--out",
            str(out),
            "--probabilities",
        ]
    )
    assert code == 0
    mask = Image.open(out / "shapes_mask.png")
    assert mask.mode == "P" and mask.size == (40, 40)
    assert np.asarray(mask).max() < 5
    # The image and the prediction side by side in solid colours, enlarged
    # whole pixels at a time (40 px -> 400 px) so the legend text is
    # legible, then the legend.
    picture = np.asarray(Image.open(out / "shapes_overlay.png"))
    assert picture.shape[0] == 400 and picture.shape[1] > 800
    np.testing.assert_array_equal(picture[::10, :400:10], image)
    gap = 400 // 100  # a white gap of 1% of the height
    np.testing.assert_array_equal(
        picture[::10, 400 + gap : 800 + gap : 10],
        visualize.colorize(np.asarray(mask)),
    )
    probabilities = np.load(out / "shapes_probabilities.npy")
    assert probabilities.shape == (40, 40, 5)
    np.testing.assert_array_equal(probabilities.argmax(-1), np.asarray(mask))


@pytest.mark.slow
def test_predict_and_evaluate_in_tiles(trained_dir, tmp_path, capsys):
    """--tile runs sliding-window inference; the class map equals the
    argmax of the blended probabilities, with or without --probabilities."""
    image, _ = synthetic_sample(1, size=56)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    model = ["--weights", str(trained_dir / "best.keras")]
    tiles = ["--tile", "32x40", "--overlap", "0.5", "--blend", "gaussian"]
    for out, extra in (("ids", []), ("probabilities", ["--probabilities"])):
        argv = ["predict", *model, str(path), "--out", str(tmp_path / out)]
        assert main([*argv, *tiles, *extra]) == 0
    ids = np.asarray(Image.open(tmp_path / "ids" / "scene_mask.png"))
    probabilities = np.load(tmp_path / "probabilities/scene_probabilities.npy")
    np.testing.assert_array_equal(ids, probabilities.argmax(-1))
    assert main(["evaluate", "demo", *model, *SETS, *tiles]) == 0
    assert re.search(r"^mIoU [0-9.]+, mDice ", capsys.readouterr().out, re.M)
    bad_tile = ["predict", *model, str(path), "--out", "x", "--tile", "4"]
    assert main(bad_tile) == 2
    assert "--tile '4' is invalid" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_model_exports_from_a_fresh_quiet_process(
    trained_dir, tmp_path
):
    """A training checkpoint loads in a new process (`python -m`), with the
    old positional MODEL spelling, and TensorFlow's C++ logs of the work
    itself show with --verbose only (its import-time lines come before the
    CLI runs and are not filtered)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    stderr = {}
    for mode in ("--verbose", "--quiet-default"):
        flags = [mode] if mode == "--verbose" else []
        out = tmp_path / mode
        run = subprocess.run(
            [sys.executable, "-m", "keras_deeplab", *flags, "export"]
            + [str(trained_dir / "best.keras"), "--format", "onnx"]
            + ["--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert (out / "onnx" / "deeplab.onnx").stat().st_size > 0
        assert run.stdout.splitlines()[0] == "writing onnx ..."
        assert run.stdout.splitlines()[1].startswith("wrote ")
        stderr[mode] = run.stderr
    # Grappler's "Starting new session" lines, logged during the export.
    assert "single_machine.cc" in stderr["--verbose"]
    assert "single_machine.cc" not in stderr["--quiet-default"]


@pytest.mark.slow
def test_tflite_exports_and_verifies_at_height_by_width(
    trained_dir, tmp_path, capsys
):
    """`--size HxW`: fixed-size TFLite files of that height and width,
    int8 calibrated on crops of that shape, compared by verify-export at
    the same --size; at another size it names the file's own."""
    from ai_edge_litert.interpreter import Interpreter

    model = ["--model", str(trained_dir / "best.keras"), "--config", "demo"]
    for quantize in ("fp32", "int8"):
        code = main(
            ["export", *model, *SETS, "--format", "tflite"]
            + [
                "--quantize",
                quantize,
                "--size",
                "40x64",
                "--out",
                str(tmp_path),
            ]
        )
        assert code == 0
        path = tmp_path / "tflite" / f"deeplab_{quantize}_40x64.tflite"
        shape = Interpreter(str(path)).get_input_details()[0]["shape"]
        assert list(shape) == [1, 40, 64, 3]
    capsys.readouterr()
    verify = ["verify-export", str(tmp_path), *model, *SETS, "--count", "4"]
    assert main([*verify, "--size", "40x64"]) == 0
    rows = {
        row["name"]: row
        for row in json.loads((tmp_path / "parity.json").read_text())
    }
    assert rows["deeplab_fp32_40x64"]["relative_diff"] <= 2e-5
    assert rows["deeplab_int8_40x64"]["argmax_agreement"] >= 0.9
    assert main(verify) == 2  # the config's export_size, 128x128
    (line,) = _error_lines(capsys)
    assert "takes 40x64 images (exported with --size 40x64)" in line


@pytest.mark.slow
def test_config_and_model_options_and_changed_settings(
    trained_dir, tmp_path, capsys
):
    """--config/--model everywhere; only non-default settings are printed."""
    code = main(
        [
            "export",
            "--model",
            str(trained_dir / "best.keras"),
            "--config",
            "demo",
            *SETS,
            "--format",
            "saved_model",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    (settings,) = [line for line in out.splitlines() if "settings:" in line]
    assert "backbone_width=4" in settings and "num_classes=5" in settings
    assert "output_stride" not in settings  # the default, not repeated
    assert (tmp_path / "serving" / "deeplab" / "1" / "saved_model.pb").is_file()
    assert (
        main(["evaluate", "--model", "m.keras"]) == 2
        and "needs --config CONFIG" in _error_lines(capsys)[0]
    )


@pytest.mark.slow
def test_predict_weights_file_needs_a_config(trained_dir, tmp_path, capsys):
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(b"")
    code = main(
        ["predict", "--weights", str(weights), "x.png", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "together with the CONFIG" in _error_lines(capsys)[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "nope.yaml", "--work-dir", "w"],
            "keras-deeplab train: error: config file 'nope.yaml' does not "
            "exist; expected a YAML or JSON file or a preset name: demo, "
            "mobile, voc_aug, cityscapes, ade20k, pets.",
        ),
        (
            ["train", "demo", "--work-dir", "w", "--set", "epoks=2"],
            "keras-deeplab train: error: unknown config key 'epoks' in --set. "
            "Did you mean epochs?",
        ),
        (
            ["train", "demo", "--work-dir", "w", "--set", "output_stride=4"],
            "keras-deeplab train: error: output_stride=4 is not supported; "
            "expected one of (8, 16, 32).",
        ),
        (
            ["evaluate", "demo", "--weights", "missing.keras"],
            "keras-deeplab evaluate: error: model file 'missing.keras' does "
            "not exist; expected a .keras file (e.g. work_dir/best.keras), a "
            ".weights.h5 file or a preset name (keras-deeplab presets).",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(
    argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert _error_lines(capsys) == [message]


def test_validate_data_reports_and_training_refuses(tmp_path, capsys):
    make_folder_dataset(tmp_path)
    write_mask(tmp_path / "masks" / "a.png", np.full((24, 32), 9))
    sets = [
        "--set",
        "dataset=folder",
        "--set",
        f"data_dir={tmp_path}",
        "--set",
        "num_classes=3",
        "--set",
        "crop_size=32",
    ]
    assert main(["validate-data", "demo", *sets]) == 1
    out = capsys.readouterr().out
    assert "split 'train': 3 examples, 1 problems" in out
    assert "labels [9] are >= num_classes=3" in out
    assert (
        main(["train", "demo", "--work-dir", str(tmp_path / "w"), *sets]) == 2
    )
    (line,) = _error_lines(capsys)
    assert line.startswith(
        "keras-deeplab train: error: refusing to train: 1 problem(s)"
    )
    assert not (tmp_path / "w" / "best.keras").exists()


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, capsys):
    """The README demo, tiny: train, evaluate, pictures, export, parity; with
    DeepLabV3+, so its whole command chain runs here too (DeepLabV3, the
    default, goes through every other CLI test)."""
    sets = [*SETS, "--set", "export_size=48"]
    sets += ["--set", "architecture=deeplabv3plus"]
    assert main(["demo", "--out", str(tmp_path), *sets]) == 0
    out = capsys.readouterr().out
    # Not a terminal: plain lines, no progress bar's escapes or returns.
    assert "\x1b" not in out and "\r" not in out
    assert re.search(r"^evaluated \d+ batch(es)? \(\d+ s\)$", out, re.M)
    assert "deeplabv3plus_resnet50_os16: " in out and "GMACs at 48x48" in out
    assert "deeplab_int8_48" in out and "val mIoU" in out
    # The tiny val split has 4 images: the parity table scores those.
    assert "the parity table scores its 4 images only" in out
    # Each artefact is announced with its time and peak memory while
    # `export all` runs.
    assert re.search(
        r"writing tflite .* at 48 \.\.\.\n"
        r".*\(\d+\.\d s, peak memory \d+\.\d GB\)",
        out,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_iou"] <= 1.0
    names = {row["name"] for row in metrics["parity"]}
    assert {"keras", "saved_model v1", "deeplab.onnx"} <= names
    for picture in ("overlays.png", "training_curves.png"):
        assert Image.open(tmp_path / picture).size[0] > 100
    assert (tmp_path / "export" / "parity.json").is_file()
    image = tmp_path / "shapes.png"
    Image.fromarray(synthetic_sample(0, size=40)[0]).save(image)
    model = tmp_path / "train" / "best.keras"
    predict = ["predict", str(image), "--model", str(model), "--out"]
    assert main([*predict, str(tmp_path / "masks")]) == 0
    assert (tmp_path / "masks" / "shapes_mask.png").is_file()
    assert_loads_with_plain_keras(model, tmp_path / "train" / "final.keras")
    # A demo that failed after training (in the export, say) resumes from
    # the finished training instead of refusing for want of a backup.
    from keras_deeplab.cli import demo
    from keras_deeplab.config import load_config

    config = load_config("demo", [item for item in sets if item != "--set"])
    train_dir = tmp_path / "train"
    assert demo.finished_training(config, train_dir, resume=True)
    other = load_config("demo", [*TINY_TRAIN, "epochs=3"])
    with pytest.raises(UserInputError, match="another config"):
        demo.finished_training(other, train_dir, resume=True)
    assert not demo.finished_training(config, train_dir, resume=False)
