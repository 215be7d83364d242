"""torchvision/VainF checkpoint conversion, checked against torchvision itself.

The reference is torchvision's own `deeplabv3_resnet50/101` with random
weights and random BatchNorm statistics (so no BN is an identity), run in
eval mode. Parity: max |logit difference| <= 1e-4 of the reference's logit
range and argmax agreement >= 99.99%, for the main and the aux output.
"""

import keras
import numpy as np
import pytest

from keras_deeplab.cli import USER_ERROR_EXIT, main
from keras_deeplab.convert import convert_torchvision
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import assert_loads_with_plain_keras, random_images
from tests.torch_reference import deeplabv3, torch, torch_logits

RELATIVE_TOLERANCE = 1e-4  # of the reference logit range
MIN_AGREEMENT = 0.9999
OUTPUTS = {"out": "logits", "aux": "aux_logits"}  # torchvision -> Keras
TORCHVISION_R50_PARAMS = 39_638_869  # deeplabv3_resnet50, 21 classes, no aux


def assert_parity(reference, logits):
    """Both thresholds of the module docstring; returns the measured pair."""
    scale = float(reference.max() - reference.min())
    worst = float(np.abs(np.asarray(logits) - reference).max())
    agreement = float(
        (np.asarray(logits).argmax(-1) == reference.argmax(-1)).mean()
    )
    assert worst <= RELATIVE_TOLERANCE * scale, (worst, scale)
    assert agreement >= MIN_AGREEMENT, agreement
    return worst / scale, agreement


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """torchvision's deeplabv3_resnet50 (aux head) as torch.save writes it."""
    model = deeplabv3("deeplabv3_resnet50")
    path = tmp_path_factory.mktemp("torch") / "deeplabv3_resnet50.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def r50(r50_file):
    """{output stride: (torchvision model, converted Keras model)}."""
    pairs = {}
    for output_stride in (8, 16):
        reference = deeplabv3("deeplabv3_resnet50", output_stride=output_stride)
        reference.load_state_dict(torch.load(r50_file, weights_only=True))
        converted = convert_torchvision(
            r50_file, arch="deeplabv3_resnet50", output_stride=output_stride
        )
        pairs[output_stride] = (reference, converted)
    return pairs


@pytest.fixture(scope="module")
def r101_file(tmp_path_factory):
    model = deeplabv3("deeplabv3_resnet101", aux_loss=False)
    path = tmp_path_factory.mktemp("torch") / "deeplabv3_resnet101.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize(
    "shape", [(1, 513, 513), (3, 97, 129), (1, 96, 128)], ids=str
)
def test_resnet50_matches_torchvision(r50, output_stride, shape):
    reference_model, converted = r50[output_stride]
    images = random_images(*shape, seed=sum(shape))
    reference = torch_logits(reference_model, images)
    outputs = converted.predict_on_batch(images)
    for torch_name, keras_name in OUTPUTS.items():
        assert outputs[keras_name].shape == reference[torch_name].shape
        assert_parity(reference[torch_name], outputs[keras_name])


@pytest.mark.slow
def test_resnet101_matches_torchvision(r101_file):
    reference_model, path = r101_file
    converted = convert_torchvision(path, arch="deeplabv3_resnet101")
    images = random_images(1, 97, 129, seed=7)
    assert_parity(
        torch_logits(reference_model, images)["out"],
        converted.predict_on_batch(images),
    )


@pytest.mark.slow
def test_parameter_counts_match_torchvision(r50):
    reference_model, converted = r50[8]
    trainable = sum(int(np.prod(w.shape)) for w in converted.trainable_weights)
    assert trainable == sum(p.numel() for p in reference_model.parameters())
    without_aux = deeplabv3("deeplabv3_resnet50", aux_loss=False)
    assert (
        sum(p.numel() for p in without_aux.parameters())
        == TORCHVISION_R50_PARAMS
    )


@pytest.mark.slow
def test_vainf_checkpoint_converts(r50, tmp_path):
    """VainF wraps a torchvision-layout state dict, head one level deeper,
    with optimizer state and a numpy best_score beside it."""
    reference_model, _ = r50[16]
    state = {
        key.replace("classifier.", "classifier.classifier.", 1): value
        for key, value in reference_model.state_dict().items()
        if not key.startswith("aux_classifier.")
    }
    optimizer = torch.optim.SGD(
        reference_model.parameters(), lr=0.01, momentum=0.9
    )
    path = tmp_path / "best_deeplabv3_resnet50_voc_os16.pth"
    torch.save(
        {
            "cur_itrs": 30000,
            "model_state": state,
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": {"last_epoch": 30000, "power": 0.9},
            "best_score": np.float64(0.769),
        },
        path,
    )
    converted = convert_torchvision(
        path, arch="deeplabv3_resnet50", output_stride=16
    )
    assert len(converted.outputs) == 1  # VainF has no aux head
    images = random_images(2, 97, 129, seed=8)
    assert_parity(
        torch_logits(reference_model, images)["out"],
        converted.predict_on_batch(images),
    )


_EXPORT_ONE_FORMAT = """
import sys
from pathlib import Path
from keras_deeplab.export.artefacts import export
from keras_deeplab.loading import load_trained_model
model, out = load_trained_model(sys.argv[1]), Path(sys.argv[2])
print(export(model, sys.argv[3], out))  # TFLite: dynamic height/width
"""


@pytest.mark.slow
def test_exports_of_a_converted_model_match_torchvision(r50, tmp_path):
    """SavedModel, TFLite and ONNX of a full-size converted ResNet-50, each
    in a child process of its own (peaks of 1.1, 2.5 and 2.6 GB; the ONNX
    export peaked at 11 GB before docs/export.md's fixes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from keras_deeplab.export.runtimes import artefact_runner

    reference_model, converted = r50[8]
    model_file = tmp_path / "converted.keras"
    converted.save(model_file)
    root = Path(__file__).resolve().parents[1]
    artefacts = []
    for fmt in ("saved_model", "tflite", "onnx"):
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                _EXPORT_ONE_FORMAT,
                model_file,
                tmp_path,
                fmt,
            ],
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        artefacts.append(Path(run.stdout.split()[-1]))
    images = random_images(1, 97, 129, seed=9)
    reference = torch_logits(reference_model, images)["out"]
    for path in artefacts:
        logits = artefact_runner(path)(images)
        assert logits.shape == reference.shape, path
        assert_parity(reference, logits)


@pytest.mark.slow
def test_cli_writes_a_safe_mode_model(r50, r50_file, tmp_path, capsys):
    out = tmp_path / "deeplabv3_resnet50.keras"
    argv = ["convert-torchvision", str(r50_file), "--out", str(out)]
    assert main([*argv, "--arch", "deeplabv3_resnet50"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = keras.saving.load_model(out, safe_mode=True)
    images = random_images(1, 65, 65, seed=10)
    # Eager calls: the converted model's predict function was traced with
    # relaxed shapes by the tests above and may pick other conv kernels.
    np.testing.assert_array_equal(
        np.asarray(loaded(images)["logits"]),
        np.asarray(r50[8][1](images)["logits"]),
    )
    assert_loads_with_plain_keras(out)


def _cli_error(argv, capsys):
    assert main(argv) == USER_ERROR_EXIT
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.slow
def test_wrong_arch_names_the_right_one(r101_file, tmp_path, capsys):
    _, path = r101_file
    line = _cli_error(
        [
            "convert-torchvision",
            str(path),
            "--arch",
            "deeplabv3_resnet50",
            "--out",
            str(tmp_path / "never.keras"),
        ],
        capsys,
    )
    assert str(path) in line
    assert "unexpected keys" in line
    assert "matches --arch deeplabv3_resnet101" in line


def test_truncated_and_foreign_files_are_refused(tmp_path, capsys):
    whole = tmp_path / "whole.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[:200])
    line = _cli_error(
        [
            "convert-torchvision",
            str(truncated),
            "--arch",
            "deeplabv3_resnet50",
            "--out",
            str(tmp_path / "m.keras"),
        ],
        capsys,
    )
    assert "truncated.pth" in line and "not a readable PyTorch" in line
    with pytest.raises(UserInputError, match=r"missing keys.*check --arch"):
        # One tensor of the stem: every other key is missing.
        convert_torchvision(whole, arch="deeplabv3_resnet50")
    assert not (tmp_path / "m.keras").exists()


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"model_state": Payload()}, path)
    with pytest.raises(UserInputError, match="is refused: its pickle names"):
        convert_torchvision(path)
    assert not marker.exists()


@pytest.mark.slow
def test_num_classes_must_match_the_file(r50_file):
    with pytest.raises(UserInputError, match="whose classifier has 21"):
        convert_torchvision(r50_file, num_classes=19)


def test_missing_checkpoint_and_bad_out_are_refused(tmp_path, capsys):
    line = _cli_error(
        [
            "convert-torchvision",
            "missing.pth",
            "--arch",
            "deeplabv3_resnet50",
            "--out",
            str(tmp_path / "model.h5"),
        ],
        capsys,
    )
    assert "must be a .keras file path" in line
    line = _cli_error(
        [
            "convert-torchvision",
            str(tmp_path / "missing.pth"),
            "--arch",
            "deeplabv3_resnet50",
            "--out",
            str(tmp_path / "model.keras"),
        ],
        capsys,
    )
    assert "missing.pth" in line and "does not exist" in line


@pytest.mark.slow
def test_fine_tune_a_converted_model_on_a_folder_dataset(r50, tmp_path):
    """Converted weights start `train` on other classes (init_weights)."""
    import yaml

    from keras_deeplab.data.synthetic import write_folder_dataset

    converted = r50[16][1]
    source = tmp_path / "converted.keras"
    converted.save(source)
    data = write_folder_dataset(
        tmp_path / "data", train_count=4, val_count=2, size=64
    )
    config = tmp_path / "finetune.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "folder",
                "data_dir": str(data),
                "num_classes": 5,
                "variant": "torchvision",
                "init_weights": str(source),
                "crop_size": 64,
                "batch_size": 2,
                "epochs": 1,
                "steps_per_epoch": 1,
                "learning_rate": 0.0,  # weights must stay the converted ones
            }
        )
    )
    work_dir = tmp_path / "run"
    assert main(["train", str(config), "--work-dir", str(work_dir)]) == 0
    tuned = keras.saving.load_model(work_dir / "final.keras", safe_mode=True)
    assert tuned.output_shape[-1] == 5
    for name in ("conv1_conv", "conv5_block3_2_conv", "head_conv_conv"):
        np.testing.assert_array_equal(
            tuned.get_layer(name).get_weights()[0],
            converted.get_layer(name).get_weights()[0],
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("int_key", "entry 3 holds a ndarray"),
        ("scalar_bias", "has a classifier bias of shape ()"),
        ("rank3_conv", "backbone.conv1: [(64, 3, 7)], expected ranks [4]"),
    ],
)
def test_odd_but_loadable_checkpoints_are_one_line(
    r50_file, tmp_path, capsys, change, message
):
    state = torch.load(r50_file, weights_only=True)
    if change == "int_key":
        state[3] = torch.ones(1)
    elif change == "scalar_bias":
        state["classifier.4.bias"] = torch.tensor(0.5)
    else:
        state["backbone.conv1.weight"] = state["backbone.conv1.weight"][..., 0]
    path = tmp_path / f"{change}.pth"
    torch.save(state, path)
    line = _cli_error(
        ["convert-torchvision", str(path), "--arch", "deeplabv3_resnet50"]
        + ["--out", str(tmp_path / "out.keras")],
        capsys,
    )
    assert str(path) in line and message in line


def test_out_naming_a_folder_is_refused_before_converting(tmp_path, capsys):
    folder = tmp_path / "models.keras"
    folder.mkdir()
    line = _cli_error(
        ["convert-torchvision", str(tmp_path / "missing.pth"), "--arch"]
        + ["deeplabv3_resnet50", "--out", str(folder)],
        capsys,
    )
    # The --out mistake is found first, before the checkpoint is read.
    assert "must be a .keras file path (not a folder)" in line


@pytest.fixture(
    scope="module",
    params=["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"],
)
def mobile(request, tmp_path_factory):
    """torchvision's mobile segmenters (output stride 16) and conversions."""
    arch = request.param
    reference = deeplabv3(arch, aux_loss=arch.startswith("deeplabv3"))
    path = tmp_path_factory.mktemp("mobile") / f"{arch}.pth"
    torch.save(reference.state_dict(), path)
    return arch, reference, convert_torchvision(path, arch=arch)


@pytest.mark.parametrize("shape", [(1, 97, 129), (2, 96, 128)], ids=str)
def test_mobile_segmenters_match_torchvision(mobile, shape):
    arch, reference_model, converted = mobile
    assert converted.spec.output_stride == 16  # torchvision's own
    images = random_images(*shape, seed=sum(shape))
    reference = torch_logits(reference_model, images)
    outputs = converted.predict_on_batch(images)
    if not isinstance(outputs, dict):
        outputs = {"logits": outputs}
    assert set(outputs) == {OUTPUTS[name] for name in reference}, arch
    for torch_name, keras_name in OUTPUTS.items():
        if torch_name in reference:
            assert_parity(reference[torch_name], outputs[keras_name])
