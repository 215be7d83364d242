"""What a careless or hostile user can throw at the CLI, the readers, the
checkpoints and the serving signatures.

Every user mistake must end with exit status 2 (1 for validate-data's
report), one line on stderr that names the file or argument, no traceback,
and nothing half-written. Each case here failed before its fix.
"""

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.cli import USER_ERROR_EXIT, main
from keras_deeplab.cli.commands import DATA_PROBLEM_EXIT
from keras_deeplab.loading import model_from_config
from keras_deeplab.training.recipe import compile_from_config
from tests.data.fixtures import make_folder_dataset, write_image, write_mask
from tests.helpers import TINY
from tests.training.tiny import TINY_TRAIN, tiny_config, train_command

SETS = [arg for item in TINY_TRAIN for arg in ("--set", item)]
REPO_ROOT = Path(__file__).resolve().parents[1]
BOMB_SIDE = 30000


def _cli(argv, capsys, *, status=USER_ERROR_EXIT):
    """Runs the CLI; returns its one stderr line (or stdout for exit 1)."""
    assert main([str(arg) for arg in argv]) == status
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    if status == USER_ERROR_EXIT:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        return lines[0]
    return captured.out


def _png_header_bomb(side=BOMB_SIDE):
    """A PNG whose IHDR claims side x side pixels, with a few bytes of data."""

    def chunk(kind, data):
        body = kind + data
        return (
            struct.pack(">I", len(data))
            + body
            + struct.pack(">I", zlib.crc32(body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_header_bomb(side=BOMB_SIDE):
    """A real JPEG whose SOF0 frame header is patched to side x side."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


@pytest.fixture()
def folder(tmp_path):
    """A valid folder dataset (train a-c, val d; 24x32 images, a.png and
    b.jpg) and the --set flags that train on it."""
    make_folder_dataset(tmp_path / "data")
    sets = [*SETS, "--set", "dataset=folder", "--set", "num_classes=3"]
    sets += ["--set", f"data_dir={tmp_path / 'data'}", "--set", "crop_size=32"]
    sets += ["--set", "batch_size=2"]
    return tmp_path / "data", sets


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    DeepLabV3(3, **TINY).save(path)
    return path


# Images and masks ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("role", ["images", "masks"])
def test_a_pixel_bomb_is_reported_not_decoded(folder, capsys, role):
    data, sets = folder
    if role == "images":
        (data / "images" / "b.jpg").unlink()
        bomb = data / "images" / "b.png"
    else:
        bomb = data / "masks" / "a.png"
    bomb.write_bytes(_png_header_bomb())
    report = _cli(
        ["validate-data", "--config", "demo", *sets],
        capsys,
        status=DATA_PROBLEM_EXIT,
    )
    assert str(bomb) in report and "decompression bomb" in report
    assert "split 'val'" in report  # the scan went on past the bomb
    line = _cli(["train", "demo", "--work-dir", data / "w", *sets], capsys)
    assert "refusing to train" in line and str(bomb) in line
    line = _cli(
        [
            "train",
            "demo",
            "--work-dir",
            data / "w2",
            *sets,
            "--set",
            "validate_data=false",
        ],
        capsys,
    )
    assert str(bomb) in line and "decompression bomb" in line


def test_predict_names_a_bomb_and_keeps_earlier_outputs(
    tiny_model_file, tmp_path, capsys
):
    good = write_image(tmp_path / "in" / "good.png")
    bomb = tmp_path / "in" / "bomb.png"
    bomb.write_bytes(_png_header_bomb())
    out = tmp_path / "out"
    line = _cli(
        ["predict", good, bomb, "--model", tiny_model_file, "--out", out],
        capsys,
    )
    assert str(bomb) in line and "decompression bomb" in line
    assert (out / "good_mask.png").is_file()
    assert not list(out.glob("bomb*"))


def test_exif_orientation_is_applied_to_photos(folder, capsys):
    """A phone JPEG stored sideways (orientation 6) with a mask drawn on the
    upright picture: read upright, so the pair fits and nothing is lost."""
    from keras_deeplab.data.sources import read_image

    data, sets = folder
    upright = np.zeros((24, 32, 3), np.uint8)
    upright[:, :16] = 255  # left half white, as the annotator saw it
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    (data / "images" / "a.png").unlink()
    stored.save(data / "images" / "a.jpg", exif=exif.tobytes(), quality=95)
    read = read_image(data / "images" / "a.jpg")
    assert read.shape == upright.shape
    assert ((read.mean(-1) > 127) == (upright.mean(-1) > 127)).mean() > 0.97
    report = _cli(
        ["validate-data", "--config", "demo", *sets], capsys, status=0
    )
    assert "split 'train': 3 examples, 0 problems" in report


def test_list_files_keep_spaces_and_unicode_in_stems(folder, capsys):
    data, sets = folder
    write_image(data / "images" / "b ä d.png")
    write_mask(data / "masks" / "b ä d.png", np.zeros((24, 32)))
    (data / "train.txt").write_text("a\nb ä d\n", encoding="utf-8")
    report = _cli(
        ["validate-data", "--config", "demo", *sets], capsys, status=0
    )
    assert "split 'train': 2 examples, 0 problems" in report


def test_two_files_for_one_stem_are_refused(folder, capsys):
    data, sets = folder
    write_image(data / "images" / "a.jpg")  # beside a.png
    line = _cli(["validate-data", "--config", "demo", *sets], capsys)
    assert "share the stem 'a'" in line
    assert "a.jpg" in line and "a.png" in line


def test_predict_refuses_two_inputs_with_one_stem(
    tiny_model_file, tmp_path, capsys
):
    first = write_image(tmp_path / "x" / "photo.png")
    second = write_image(tmp_path / "y" / "photo.jpg")
    out = tmp_path / "out"
    line = _cli(
        ["predict", first, second, "--model", tiny_model_file, "--out", out],
        capsys,
    )
    assert "photo_mask.png" in line and str(second) in line
    assert not list(out.glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "label", "message"),
    [
        ((10, 10), 0, "is [10 10] but its image is [24 32]"),
        # 255 is "ignore", never reported as the largest label.
        ((24, 32), 7, "holds labels >= num_classes=3 that are not 255 "
         "(largest 7)"),
    ],
)  # fmt: skip
def test_unvalidated_bad_masks_stop_training_with_one_line(
    folder, capsys, shape, label, message
):
    data, sets = folder
    mask = np.full(shape, label)
    mask[0, 0] = 255
    write_mask(data / "masks" / "c.png", mask)
    line = _cli(
        [
            "train",
            "demo",
            "--work-dir",
            data / "w",
            *sets,
            "--set",
            "validate_data=false",
        ],
        capsys,
    )
    assert str(data / "masks" / "c.png") in line and message in line
    # The run stopped before a step: nothing it wrote suggests it ran.
    leftovers = {p.name for p in (data / "w").iterdir()} - {".train.lock"}
    assert not leftovers & {"config.json", "history.csv"}, leftovers


def test_an_empty_training_split_is_a_problem(folder, capsys):
    data, sets = folder
    (data / "train.txt").write_text("\n")
    report = _cli(
        ["validate-data", "--config", "demo", *sets],
        capsys,
        status=DATA_PROBLEM_EXIT,
    )
    assert "split 'train': has no examples" in report


# Configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("backup_every_steps=0", "backup_every_steps=0 is out of range"),
        ("dropout_rate=1.5", "dropout_rate=1.5 is out of range"),
        ("head_filters=-1", "head_filters=-1 is out of range"),
        ("eval_scales=[]", "eval_scales=() is invalid"),
        ("eval_scales=[-1]", "eval_scales=(-1.0,) is invalid"),
        ("batch_size=true", "batch_size=True has the wrong type"),
        ("num_classes=300", "num_classes=300 is out of range"),
        ("model_name=../../x", "model_name='../../x' is invalid"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(
    setting, message, tmp_path, capsys
):
    line = _cli(
        ["train", "demo", "--work-dir", tmp_path, "--set", setting], capsys
    )
    assert message in line
    assert not list(tmp_path.iterdir())


def test_binary_and_alias_bomb_configs_are_refused(tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    line = _cli(["validate-data", "--config", binary], capsys)
    assert "binary.yaml" in line and "not UTF-8" in line
    bomb = tmp_path / "bomb.yaml"
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        items = ", ".join([f"*{chr(96 + level)}"] * 9)
        levels.append(f"{chr(97 + level)}: &{chr(97 + level)} [{items}]")
    bomb.write_text("\n".join(levels) + "\n")
    line = _cli(["validate-data", "--config", bomb], capsys)
    assert "bomb.yaml" in line and "aliases" in line


def test_evaluate_refuses_a_config_with_other_classes(tiny_model_file, capsys):
    line = _cli(
        ["evaluate", "--config", "demo", *SETS, "--model", tiny_model_file],
        capsys,
    )
    assert "predicts 3 classes but num_classes=5" in line


# Model files -----------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"not a zip at all", "truncated"])
def test_damaged_model_files(tiny_model_file, tmp_path, capsys, content):
    path = tmp_path / "model.keras"
    if content == "truncated":
        content = tiny_model_file.read_bytes()[:5000]
    path.write_bytes(content)
    image = write_image(tmp_path / "photo.png")
    line = _cli(
        ["predict", image, "--model", path, "--out", tmp_path / "o"], capsys
    )
    assert str(path) in line and "not a .keras archive" in line


def test_safe_mode_refusal_is_one_line(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    line = _cli(
        ["export", "--model", path, "--format", "onnx", "--out", tmp_path],
        capsys,
    )
    assert str(path) in line and "cannot be loaded in safe mode" in line
    assert not (tmp_path / "onnx").exists()


def test_weights_of_another_architecture(tmp_path, capsys):
    path = tmp_path / "other.weights.h5"
    DeepLabV3(5, backbone_width=8, head_filters=8).save_weights(path)
    line = _cli(
        [
            "evaluate",
            "--config",
            "demo",
            *SETS,
            "--model",
            path,
        ],
        capsys,
    )
    assert str(path) in line and "does not load into" in line


# Backups and runs ------------------------------------------------------------


def _write_backup(work_dir, state, *, config=None):
    """A backup as TrainingBackup writes it, for the given config's model."""
    backup = work_dir / "backup"
    backup.mkdir(parents=True)
    model = model_from_config(config or tiny_config())
    compile_from_config(model, config or tiny_config(), 10)
    model.optimizer.build(model.trainable_variables)
    model.save_weights(backup / "latest.weights.h5")
    (backup / "state.json").write_text(state)
    return backup


@pytest.mark.slow
@pytest.mark.parametrize(
    ("state", "weights", "message"),
    [
        ("", None, "is unreadable"),
        ("{not json", None, "is unreadable"),
        ('{"epoch": "abc", "step": 0}', None, 'expected {"epoch": int'),
        # N-R01: a bool is an int to Python; it resumed silently.
        ('{"epoch": true, "step": 0}', None, 'expected {"epoch": int'),
        ('{"epoch": 99, "step": 0}', None, "is at epoch 99 but this run"),
        ('{"epoch": 1, "step": 0}', b"truncated", "cannot be resumed"),
        ('{"epoch": 1, "step": 0}', "other", "cannot be resumed"),
    ],
)
def test_damaged_backups_are_refused(tmp_path, capsys, state, weights, message):
    backup = _write_backup(tmp_path, state)
    if weights == "other":
        other = tiny_config("backbone_width=8")
        model_from_config(other).save_weights(backup / "latest.weights.h5")
    elif weights is not None:
        (backup / "latest.weights.h5").write_bytes(weights)
    line = _cli(
        ["train", "demo", "--work-dir", tmp_path, *SETS, "--resume"], capsys
    )
    assert message in line
    assert not (tmp_path / "final.keras").exists()


@pytest.mark.slow
def test_a_diverging_run_keeps_its_backup_and_publishes_nothing(
    tmp_path, capsys
):
    backup = _write_backup(tmp_path, '{"epoch": 1, "step": 0}')
    before = (backup / "latest.weights.h5").read_bytes()
    line = _cli(
        [
            "train",
            "demo",
            "--work-dir",
            tmp_path,
            *SETS,
            "--set",
            "learning_rate=1e30",
            "--set",
            "optimizer=sgd",
            "--resume",
        ],
        capsys,
    )
    assert "training diverged" in line and "is kept" in line
    assert (backup / "latest.weights.h5").read_bytes() == before
    for name in ("final.keras", "best.keras", "best.json"):
        assert not (tmp_path / name).exists(), name


def test_a_finished_work_dir_is_not_mixed_with_a_new_run(tmp_path, capsys):
    (tmp_path / "best.keras").write_bytes(b"an older run's model")
    (tmp_path / "best.json").write_text(json.dumps({"value": 0.99}))
    line = _cli(["train", "demo", "--work-dir", tmp_path, *SETS], capsys)
    assert "holds a previous run (best.keras, best.json)" in line
    assert "--overwrite" in line


# Output paths ----------------------------------------------------------------


def test_output_paths_that_cannot_be_folders(tiny_model_file, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    line = _cli(
        ["export", "--model", tiny_model_file, "--format", "onnx"]
        + ["--out", a_file],
        capsys,
    )
    assert str(a_file) in line and "is a file" in line
    line = _cli(
        ["predict", a_file, "--model", tiny_model_file]
        + ["--out", a_file / "sub"],
        capsys,
    )
    assert str(a_file / "sub") in line and "cannot be created" in line
    for size in ("-5", "512x", "0x64"):
        line = _cli(
            ["export", "--model", tiny_model_file, "--format", "tflite"]
            + ["--size", size, "--out", tmp_path],
            capsys,
        )
        assert f"--size {size!r} is invalid" in line and "512x1024" in line


# Serving inputs --------------------------------------------------------------


@pytest.fixture(scope="module")
def serving(tiny_model_file, tmp_path_factory):
    from keras_deeplab.export.saved_model import export_saved_model

    model = keras.saving.load_model(tiny_model_file, safe_mode=True)
    path = export_saved_model(model, tmp_path_factory.mktemp("serving"))
    return tf.saved_model.load(str(path)).signatures["serve_image_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a" + struct.pack("<HH", BOMB_SIDE, BOMB_SIDE), "JPEG or PNG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L", "JPEG or PNG"),
        (b"BM" + b"\x00" * 64, "JPEG or PNG"),
        # Only the header is valid: a decoder running first would fail on
        # the data, not on the size, so these prove the check comes first.
        (_png_header_bomb(), "max_pixels"),
        (_jpeg_header_bomb(), "max_pixels"),
    ],
    ids=["gif", "webp", "bmp", "png_header", "jpeg_header"],
)
def test_image_bytes_are_size_checked_before_decoding(serving, data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving(image_bytes=tf.constant([data]))


@pytest.mark.slow
def test_litert_runner_refuses_what_the_interpreter_would_run(
    tiny_model_file,
):
    from keras_deeplab.export.runtimes import tflite_session
    from keras_deeplab.export.tflite import convert_tflite

    model = keras.saving.load_model(tiny_model_file, safe_mode=True)
    run = tflite_session(convert_tflite(model))  # dynamic height and width
    assert run(np.zeros((1, 33, 33, 3))).shape == (1, 33, 33, 3)
    for shape in ((33, 33, 3), (1, 33, 33, 4)):
        with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
            run(np.zeros(shape))
    # A fixed-size model fed another size: XNNPack fails to reshape it.
    fixed = tflite_session(convert_tflite(model, size=33))
    assert fixed(np.zeros((1, 33, 33, 3))).shape == (1, 33, 33, 3)
    with pytest.raises(ValueError, match="takes 33x33 images"):
        fixed(np.zeros((1, 48, 40, 3)))


def test_yaml_configs_still_parse_plain_values(tmp_path):
    from keras_deeplab.config import load_config

    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"preset": "demo", "epochs": 3}))
    assert load_config(str(path)).epochs == 3


# The second probe round (items 11-19 of issue 24) ----------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("bn_momentum=nan", "bn_momentum=nan is not a finite number"),
        ("min_scale=nan", "min_scale=nan is not a finite number"),
        ("learning_rate=nan", "learning_rate=nan is not a finite number"),
        ("learning_rate=inf", "learning_rate=inf is not a finite number"),
        ("dropout_rate=nan", "dropout_rate=nan is not a finite number"),
        ("eval_scales=[1e-9]", "eval_scales=(1e-09,) is invalid"),
        ("seed=4294967296", "seed=4294967296 is out of range"),
        ("model_name=" + "m" * 300, "model_name='mmmm"),
        ("atrous_rates=[1000000000,1,1]", "atrous_rates=(1000000000, 1, 1)"),
        ("multi_grid=[1,2,400]", "multi_grid=(1, 2, 400) is invalid"),
        ("class_names=cat", "class_names='cat' has the wrong type"),
    ],
)
def test_absurd_values_are_refused_in_one_line(
    setting, message, tmp_path, capsys
):
    line = _cli(
        ["train", "demo", "--work-dir", tmp_path, *SETS, "--set", setting],
        capsys,
    )
    assert message in line
    assert not list(tmp_path.iterdir())


def test_a_deeply_nested_config_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("epochs: " + "[" * 30000 + "]" * 30000 + "\n")
    line = _cli(["validate-data", "--config", path], capsys)
    assert "deep.yaml" in line and "nests its values" in line


def _tmpfs(path, size):
    """A small filesystem at `path`, or a skip where mounting is not
    allowed (it needs root)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()}")
    return path


@pytest.fixture
def small_disk(tmp_path):
    disk = _tmpfs(tmp_path / "disk", "600k")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_that_names_the_path(
    small_disk, tiny_model_file, capsys
):
    """A TFLite file larger than the disk: the write fails, one line names
    the file, and nothing half-written stays."""
    out = small_disk / "exported"
    line = _cli(
        ["export", "--model", tiny_model_file, "--format", "tflite"]
        + ["--out", out],
        capsys,
    )
    assert "no space left on the device" in line and str(out) in line
    tflite = out / "tflite"
    assert not [p for p in tflite.rglob("*") if p.suffix == ".tflite"]


@pytest.mark.slow
def test_training_on_a_full_disk_stops_in_one_line(small_disk):
    """The backup is the first large write of a run; it fails cleanly."""
    line = _train_error_line(
        small_disk / "run", [*TINY_TRAIN, "backup_every_steps=1"]
    )
    assert "no space left on the device" in line and str(small_disk) in line


def _train_error_line(work_dir, settings):
    """`train` in a process of its own; its one stderr line (exit 2)."""
    completed = subprocess.run(
        train_command(work_dir, settings),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == USER_ERROR_EXIT, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr[-2000:]
    return lines[0]


@pytest.fixture
def disk_of(tmp_path):
    """disk_of(size): a small file system, unmounted after the test."""
    mounted = []

    def make(size):
        disk = _tmpfs(tmp_path / f"disk{len(mounted)}", size)
        mounted.append(disk)
        return disk

    yield make
    for disk in mounted:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_during_training_is_one_line(disk_of):
    """N-D01: the backup passes the free-space check, then h5py's write
    fails half-way: a RuntimeError wrapping ENOSPC, 28 lines of traceback."""
    disk = disk_of("2m")
    line = _train_error_line(disk / "run", TINY_TRAIN)
    assert "no space left on the device" in line and str(disk) in line
    assert not [p for p in disk.rglob("*") if "partial" in p.name]


@pytest.mark.slow
def test_a_full_disk_in_saved_model_and_probability_writes_is_one_line(
    disk_of, tiny_model_file, tmp_path, capsys
):
    """N-D04: a SavedModel export (TensorFlow's ResourceExhaustedError);
    N-D05: predict --probabilities (numpy's "requested and written")."""
    disk = disk_of("400k")
    line = _cli(
        ["export", "--model", tiny_model_file, "--format", "saved_model"]
        + ["--out", disk / "exported"],
        capsys,
    )
    assert "no space left on the device" in line and str(disk) in line
    assert not [p for p in disk.rglob("*") if "partial" in p.name]
    photo = tmp_path / "big.png"
    pixels = np.random.default_rng(0).integers(0, 255, (500, 600, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(photo)
    disk = disk_of("1m")
    line = _cli(
        ["predict", photo, "--model", tiny_model_file, "--probabilities"]
        + ["--out", disk / "masks"],
        capsys,
    )
    assert "no space left on the device" in line and str(disk) in line
    assert not [p for p in disk.rglob("*") if "partial" in p.name]


def _sigint_as_in_a_terminal():
    """SIGINT's default disposition, which Python turns into
    KeyboardInterrupt: a command run in the foreground of a terminal has
    it, but a POSIX shell starts a background job (`pytest ... &`, or a CI
    runner launched that way) with SIGINT ignored, and every child inherits
    that: the trainer then ignores Ctrl-C, as the shell meant, and trained
    to its last epoch in two fresh-clone CI runs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_and_keeps_the_backup(tmp_path):
    settings = [*TINY_TRAIN, "epochs=50", "backup_every_steps=1"]
    process = subprocess.Popen(
        train_command(tmp_path, settings),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    state = tmp_path / "backup" / "state.json"
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state.exists(), "no backup within 240 s"
    process.send_signal(signal.SIGINT)
    # A hang guard, not a time limit: Python handles SIGINT only when
    # TensorFlow hands control back, which waits for the graph
    # optimisation of a function traced at that moment (the validation
    # step's, at the first epoch's end). 16 s here beside three busy
    # loops; over 120 s twice in fresh-clone CI beside the other worker.
    _, stderr = process.communicate(timeout=420)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        "keras-deeplab train: error: interrupted; the last backup is intact: "
        "run again with --resume"
    ]
    assert json.loads(state.read_text())["epoch"] >= 0


@pytest.mark.slow
def test_a_busy_coordinator_port_is_named(tmp_path):
    """JAX crashes without a word when process 0's port is taken."""
    pytest.importorskip("jax")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            train_command(tmp_path, [*TINY_TRAIN, "strategy=data_parallel"]),
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),
                "KERAS_BACKEND": "jax",
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": "0",
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert completed.returncode == USER_ERROR_EXIT, completed.stderr[-2000:]
    (line,) = completed.stderr.strip().splitlines()
    assert f"cannot serve the coordinator on port {port}" in line


def test_port_zero_is_refused(monkeypatch):
    from keras_deeplab.training import strategies

    monkeypatch.setenv(strategies.JOB_ADDRESSES, "127.0.0.1:0")
    monkeypatch.setenv(strategies.NUM_PROCESSES, "2")
    monkeypatch.setenv(strategies.PROCESS_ID, "0")
    with pytest.raises(ValueError, match="a port from 1 to 65535"):
        strategies.cluster_from_environment()


def test_predict_never_overwrites_existing_outputs(
    tiny_model_file, tmp_path, capsys
):
    image = write_image(tmp_path / "photo.png")
    out = tmp_path / "out"
    out.mkdir()
    truth = out / "photo_mask.png"
    truth.write_bytes(b"a user's ground truth")
    line = _cli(
        ["predict", image, "--model", tiny_model_file, "--out", out], capsys
    )
    assert "already exist" in line and "--overwrite" in line
    assert truth.read_bytes() == b"a user's ground truth"


def test_export_options_that_do_not_apply_are_refused(
    tiny_model_file, tmp_path, capsys
):
    line = _cli(
        ["export", "--model", tiny_model_file, "--format", "onnx"]
        + ["--argmax", "--out", tmp_path],
        capsys,
    )
    assert "apply to TFLite only" in line
    assert not (tmp_path / "onnx").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["export", "--model", str(tiny_model_file), "--format"]
            + ["saved_model", "--version", "99999999999999999999"]
            + ["--out", str(tmp_path)]
        )
    assert exit_info.value.code == USER_ERROR_EXIT
    assert "not a positive int up to" in capsys.readouterr().err


def test_a_folder_given_as_an_image_is_named(tiny_model_file, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    line = _cli(
        [
            "predict",
            folder,
            "--model",
            tiny_model_file,
            "--out",
            tmp_path / "o",
        ],
        capsys,
    )
    assert str(folder) in line and "is a folder" in line


def test_weights_of_another_config_say_so_without_keras_warnings(
    tmp_path, capfd
):
    path = tmp_path / "other.weights.h5"
    DeepLabV3(5, backbone_width=8, head_filters=8).save_weights(path)
    assert (
        main(["evaluate", "--config", "demo", *SETS, "--model", str(path)]) == 2
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not load into" in err[0], err


@pytest.mark.slow
def test_a_mixed_precision_model_exports_to_tflite(tmp_path):
    """The TFLite converter never finished on a bfloat16 graph; export
    converts float32 (in a child with a deadline, so a hang fails)."""
    script = (
        "import sys, keras, numpy as np\n"
        "from keras_deeplab import DeepLabV3\n"
        "from keras_deeplab.export.tflite import convert_tflite, run_tflite\n"
        "keras.config.set_dtype_policy('mixed_bfloat16')\n"
        "model = DeepLabV3(3, backbone_width=4, head_filters=8)\n"
        "keras.config.set_dtype_policy('float32')\n"
        "images = np.random.default_rng(0).uniform(0, 255, (1, 33, 33, 3))\n"
        "logits = run_tflite(convert_tflite(model, size=33), images)\n"
        "reference = np.asarray(model(images), np.float32)\n"
        "print('AGREE', (logits.argmax(-1) == reference.argmax(-1)).mean())\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    agreement = float(completed.stdout.split("AGREE")[1])
    assert agreement >= 0.95  # bf16 Keras against the float32 export


# The third probe round (issue 34) --------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # C-L12/L17: an identically zero loss trained nothing, exit 0.
        (
            ["loss=ce+dice", "loss_term_weights=[0,0]"],
            "loss_term_weights=[0.0, 0.0] makes the loss zero everywhere",
        ),
        (["class_weights=[0,0,0,0,0]"], "makes the loss zero everywhere"),
        # N-C27, N-C33: refused at train start, not by the config.
        (["backbone_weights=/etc/passwd"], "nor an existing .h5 file"),
        (["crop_size=100000"], "crop_size=100000 is out of range"),
        # E-C02: every calibration crop is kept (~316 GB at 513).
        (["calibration_images=100000"], "<= 1024"),
        (["export_size=99999"], "export_size=99999 is out of range"),
    ],
)
def test_values_that_fail_later_are_refused_by_the_config(
    settings, message, tmp_path, capsys
):
    sets = [arg for item in settings for arg in ("--set", item)]
    line = _cli(["train", "demo", "--work-dir", tmp_path, *SETS, *sets], capsys)
    assert message in line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("scales", ["nan", "inf,1", "1e-9", "1,x"])
def test_bad_scales_are_refused_as_eval_scales_are(
    scales, tiny_model_file, tmp_path, capsys
):
    """TL-17..19: --scales nan was a ValueError traceback, inf an
    OverflowError, 1e-9 ran where eval_scales=[1e-9] is refused."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["predict", str(tmp_path / "x.png"), "--model"]
            + [str(tiny_model_file), "--out", str(tmp_path), "--scales", scales]
        )
    assert exit_info.value.code == USER_ERROR_EXIT
    error = capsys.readouterr().err
    assert "from 0.1 to 4.0" in error and "Traceback" not in error


def test_export_size_has_an_upper_bound(tiny_model_file, tmp_path, capsys):
    """E-S04: --size 99999x99999 exported a 1e10-pixel TFLite input."""
    line = _cli(
        ["export", "--model", tiny_model_file, "--format", "tflite"]
        + ["--size", "99999x99999", "--out", tmp_path / "x"],
        capsys,
    )
    assert "--size '99999x99999' is too large" in line and "4096" in line


@pytest.mark.slow
def test_verify_export_of_another_model_or_a_junk_file_is_one_line(
    tiny_model_file, tmp_path, capsys
):
    """V-02: an export of a 3-class model checked against a 5-class one
    was a broadcast ValueError; V-03: a junk .tflite a Flatbuffer
    traceback."""
    out = tmp_path / "exported"
    assert (
        main(
            ["export", "--model", str(tiny_model_file), "--format", "onnx"]
            + ["--out", str(out)]
        )
        == 0
    )
    capsys.readouterr()
    five = tmp_path / "five.keras"
    DeepLabV3(5, **TINY).save(five)
    verify = ["verify-export", out, "--config", "demo", *SETS]
    line = _cli([*verify, "--model", five, "--count", "2"], capsys)
    assert "deeplab.onnx returns 3 classes but the model has 5" in line
    junk = tmp_path / "junk"
    (junk / "tflite").mkdir(parents=True)
    (junk / "tflite" / "deeplab_fp32_128.tflite").write_bytes(b"junk" * 10)
    line = _cli(
        ["verify-export", junk, "--config", "demo", *SETS, "--model", five]
        + ["--count", "2"],
        capsys,
    )
    assert "deeplab_fp32_128.tflite" in line and "cannot be loaded" in line


def test_evaluate_keeps_an_earlier_report(tiny_model_file, tmp_path, capsys):
    """RP-01: evaluate --report DIR overwrote report.json; refused before
    the evaluation runs, as predict refuses to overwrite its outputs."""
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text('{"miou": 0.7}')
    line = _cli(
        ["evaluate", "--config", "demo", *SETS, "--model", tiny_model_file]
        + ["--report", report],
        capsys,
    )
    assert "already holds an earlier report (report.json)" in line
    assert (report / "report.json").read_text() == '{"miou": 0.7}'


@pytest.mark.parametrize(
    "content", [bytes(range(256)), "1 2 3\n".encode("utf-16")]
)
def test_a_palette_that_is_not_utf8_is_one_line(folder, capsys, content):
    """KC-04/05: a binary or UTF-16 palette file was a UnicodeDecodeError
    traceback."""
    data, sets = folder
    palette = data / "palette.txt"
    palette.write_bytes(content)
    line = _cli(
        ["validate-data", "--config", "demo", *sets]
        + ["--set", f"mask_colors={palette}"],
        capsys,
    )
    assert "palette.txt" in line and "not UTF-8" in line


def test_converting_a_folder_says_it_is_a_folder(tmp_path, capsys):
    """N-X02: `convert-torchvision .` said "does not exist"."""
    line = _cli(
        ["convert-torchvision", tmp_path, "--arch", "deeplabv3_resnet50"]
        + ["--out", tmp_path / "m.keras"],
        capsys,
    )
    assert "is a folder; expected a .pth/.pt file" in line


@pytest.mark.slow
def test_an_unreadable_image_in_the_pipeline_is_one_plain_line(folder, capsys):
    """N-T32: with validate_data false, a data error raised inside tf.data
    came out with escaped quotes."""
    data, sets = folder
    (data / "images" / "c.png").write_bytes(b"not a png at all")
    line = _cli(
        ["train", "demo", "--work-dir", data / "w", *sets]
        + ["--set", "validate_data=false"],
        capsys,
    )
    assert f"image '{data / 'images' / 'c.png'}' is unreadable" in line
    assert "\\" not in line
