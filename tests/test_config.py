"""Config precedence, coercion and the wording of errors."""

import json

import pytest

from keras_deeplab.config import DeepLabConfig, load_config, parse_overrides


def test_precedence_defaults_preset_file_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: demo\nbatch_size: 4\nepochs: 3\n")
    config = load_config(
        str(path), ["epochs=7", "atrous_rates=[1, 2, 3]", "learning_rate=3e-3"]
    )
    assert config.learning_rate == 0.003  # not YAML 1.1's string "3e-3"
    assert config.num_classes == 5  # from the preset
    assert config.batch_size == 4  # the file beats the preset
    assert config.epochs == 7  # --set beats the file
    assert config.atrous_rates == (1, 2, 3)  # coerced to the field type
    assert config.momentum == DeepLabConfig().momentum  # default


def test_json_file_and_none_values(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"learning_rate": 1, "atrous_rates": None}))
    config = load_config(str(path), ["backbone_weights=none"])
    assert config.learning_rate == 1.0 and isinstance(
        config.learning_rate, float
    )
    assert config.atrous_rates is None and config.backbone_weights is None


def test_saved_config_loads_back(tmp_path):
    config = load_config("demo", ["seed=3"])
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert load_config(str(path)) == config


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ValueError) as info:
        load_config(None, ["batchsize=8"])
    assert str(info.value) == (
        "unknown config key 'batchsize' in --set. Did you mean batch_size?"
    )


def test_wrong_type_names_key_and_type():
    with pytest.raises(ValueError) as info:
        load_config(None, ["epochs=many"])
    assert str(info.value) == (
        "epochs='many' has the wrong type (in --set); expected int."
    )


def test_cross_field_checks():
    with pytest.raises(ValueError) as info:
        load_config(None, ["output_stride=12"])
    assert str(info.value) == (
        "output_stride=12 is not supported; expected one of (8, 16, 32)."
    )
    with pytest.raises(ValueError, match="crop_size=16 is too small"):
        load_config(None, ["crop_size=16"])
    with pytest.raises(ValueError, match="needs data_dir"):
        load_config(None, ["dataset=folder"])


def test_bad_set_syntax_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides(["batch_size"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
