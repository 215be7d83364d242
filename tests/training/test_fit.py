"""model.fit training: outputs in the work dir, resume guards, options."""

import json

import keras
import numpy as np
import pytest

from keras_deeplab.data.configured import DataSplits
from keras_deeplab.loading import load_trained_model, model_from_config
from keras_deeplab.training.fit import fit_dataset, train
from keras_deeplab.training.recipe import (
    compile_from_config,
    make_optimizer,
    objective_from_config,
)
from keras_deeplab.training.workdir import (
    BEST_MODEL,
    CONFIG_FILE,
    FINAL_MODEL,
    HISTORY_FILE,
)
from tests.training.tiny import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("run")
    config = tiny_config()
    history = train(config, work_dir, verbose=0)
    return config, work_dir, history


@pytest.mark.slow
def test_training_writes_checkpoints_logs_and_config(trained):
    config, work_dir, history = trained
    for name in (BEST_MODEL, FINAL_MODEL, CONFIG_FILE, HISTORY_FILE):
        assert (work_dir / name).is_file(), name
    assert (work_dir / "logs").is_dir()
    assert not (work_dir / "backup").exists()  # removed after a full run
    assert json.loads((work_dir / CONFIG_FILE).read_text())["epochs"] == 2
    assert len(history.history["val_mean_iou"]) == 2
    best = json.loads((work_dir / "best.json").read_text())
    assert best["value"] == pytest.approx(max(history.history["val_mean_iou"]))
    model = load_trained_model(work_dir / BEST_MODEL)
    assert model.output_shape == (None, None, None, config.num_classes)
    assert not list(work_dir.glob(".*partial*"))  # no temporary leftovers


@pytest.mark.slow
def test_the_compiled_model_learns_one_batch():
    """Loss, optimizer and gradients (through the atrous layers' custom
    gradient) work together: repeated steps on one batch must drive its
    loss down. Two short epochs of real data are too noisy to show it, and
    so is the demo's 1e-3 on a width-4 model from scratch (-10% in 15 steps,
    run to run); at 1e-2 the loss halves."""
    config = tiny_config("learning_rate=0.01")
    images, masks = next(
        iter(
            fit_dataset(
                DataSplits(config),
                config.train_split,
                objective=objective_from_config(config),
                training=True,
            )
        )
    )
    model = compile_from_config(model_from_config(config), config, 100)
    traces = []
    train_step = model.train_step

    def counted_train_step(data):
        traces.append(1)  # Python runs only while the step is traced
        return train_step(data)

    model.train_step = counted_train_step
    losses = model.fit(
        images, masks, epochs=15, batch_size=4, verbose=0
    ).history["loss"]
    assert losses[-1] < 0.85 * losses[0], losses
    # The optimizer was built before the first step, so the step that
    # would have created its variables is traced once, not twice.
    assert len(traces) == 1


def test_new_run_refuses_an_interrupted_work_dir(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text('{"epoch": 1}')
    with pytest.raises(ValueError, match="pass --resume"):
        train(tiny_config(), tmp_path)
    with pytest.raises(ValueError, match="no backup to resume from"):
        train(tiny_config(), tmp_path / "fresh", resume=True)


def test_weight_decay_skips_biases_and_batchnorm():
    config = tiny_config("optimizer=sgd")
    model = model_from_config(config)
    optimizer = make_optimizer(
        learning_rate=config.learning_rate, total_steps=10, name="sgd"
    )
    optimizer.build(model.trainable_variables)
    decayed = {
        v.path
        for v in model.trainable_variables
        if optimizer._use_weight_decay(v)
    }
    assert decayed and all(path.endswith("kernel") for path in decayed)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.9


def test_freeze_bn_makes_every_batchnorm_static():
    model = model_from_config(tiny_config("freeze_bn=true", "dropout_rate=0"))
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and not any(layer.trainable for layer in norms)
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3))
    np.testing.assert_allclose(
        np.asarray(model(images, training=True)),
        np.asarray(model(images, training=False)),
        atol=1e-5,
    )


@pytest.mark.slow
def test_aux_head_trains_with_weighted_loss(tmp_path):
    history = train(
        tiny_config("aux_head=true", "epochs=1"), tmp_path, verbose=0
    )
    logs = history.history
    assert logs["loss"][0] == pytest.approx(
        logs["logits_loss"][0] + 0.4 * logs["aux_logits_loss"][0], rel=0.05
    )
    assert "val_logits_mean_iou" in logs


@pytest.mark.slow
def test_mixed_bfloat16_training_keeps_float32_logits(tmp_path):
    history = train(
        tiny_config("precision=mixed_bfloat16", "epochs=1"), tmp_path, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    assert keras.config.dtype_policy().name == "float32"  # restored
    # The weights are float32 whatever the policy, and the saved model loads
    # as a float32 model (bf16 inference is derived.with_precision).
    model = load_trained_model(tmp_path / FINAL_MODEL)
    assert model.get_layer("conv1_conv").compute_dtype == "float32"
    logits = model(np.zeros((1, 48, 48, 3), "float32"))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
