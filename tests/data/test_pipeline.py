"""tf.data pipelines end to end, label checks, tfds adapter, validation."""

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.config import load_config
from keras_deeplab.data.configured import (
    calibration_images,
    split_dataset,
    split_size,
)
from keras_deeplab.data.sources import DataError
from keras_deeplab.data.validate import require_valid, validate_data
from keras_deeplab.layers import IMAGENET_MEAN_RGB
from tests.data.fixtures import (
    folder_config,
    make_folder_dataset,
    write_image,
    write_mask,
)


def test_folder_dataset_batches_for_fit(tmp_path):
    make_folder_dataset(tmp_path)
    config = folder_config(tmp_path)
    assert split_size(config, "train") == 3
    images, masks = next(iter(split_dataset(config, "train", training=True)))
    assert images.shape == (2, 32, 32, 3) and images.dtype == tf.float32
    assert masks.shape == (2, 32, 32) and masks.dtype == tf.int32
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, 255}
    images, masks = next(iter(split_dataset(config, "val", training=False)))
    assert images.shape == (1, 24, 32, 3)  # at its own size, not crop_size


def test_evaluation_batches_pad_to_their_largest_image(tmp_path):
    """An image larger than crop_size is evaluated whole; a smaller one in
    the same batch is padded with the mean pixel and the ignore label."""
    make_folder_dataset(tmp_path, stems_val=("d", "e"))
    write_image(tmp_path / "images" / "e.png", height=45, width=20)
    write_mask(tmp_path / "masks" / "e.png", np.ones((45, 20)))
    config = folder_config(tmp_path, "crop_size=32")
    images, masks = next(iter(split_dataset(config, "val", training=False)))
    assert images.shape == (2, 45, 32, 3)
    masks, images = masks.numpy(), images.numpy()
    assert (masks[0, 24:] == 255).all() and (masks[1, :, 20:] == 255).all()
    assert (masks[1, :, :20] == 1).all()
    np.testing.assert_allclose(
        images[0, 30], np.tile(IMAGENET_MEAN_RGB, (32, 1)), atol=1e-4
    )


def test_seeded_pipeline_is_reproducible(tmp_path):
    make_folder_dataset(tmp_path)
    config = folder_config(tmp_path, "seed=5")

    def first_batch():
        return next(iter(split_dataset(config, "train", training=True)))

    (a, b), (c, d) = first_batch(), first_batch()
    np.testing.assert_array_equal(a.numpy(), c.numpy())
    np.testing.assert_array_equal(b.numpy(), d.numpy())


def test_out_of_range_labels_stop_the_pipeline(tmp_path):
    make_folder_dataset(tmp_path)
    write_mask(tmp_path / "masks" / "a.png", np.full((24, 32), 7))
    config = folder_config(tmp_path)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a.png"):
        for _ in split_dataset(config, "train", training=True):
            pass


def test_validate_data_reports_every_problem(tmp_path):
    make_folder_dataset(tmp_path, stems_train=("a", "b", "c", "e", "f"))
    write_mask(tmp_path / "masks" / "a.png", np.full((24, 32), 7))
    write_mask(tmp_path / "masks" / "b.png", np.zeros((10, 10)))
    (tmp_path / "images" / "c.png").write_bytes(b"")
    (tmp_path / "masks" / "e.png").unlink()
    write_image(tmp_path / "images" / "d.jpg", height=40, width=20)
    write_mask(tmp_path / "masks" / "d.png", np.zeros((40, 20)))
    config = folder_config(tmp_path)
    train_report, val_report = validate_data(config)
    problems = dict(
        (name.rsplit("/", 1)[-1], message)
        for name, message in train_report.problems
    )
    # Each problem is reported under the file at fault.
    assert "labels [7] are >= num_classes=3" in problems["a.png"]
    assert "is 10x10 but its image is 24x32" in problems["b.png"]
    assert problems["c.png"] == "image is empty (0 bytes)."
    assert problems["e.png"] == "mask does not exist."
    assert "f.png" not in problems
    assert train_report.scanned == 5
    assert train_report.class_pixels.sum() > 0
    # A 40 px image in a split with crop_size=32 is fine: evaluation runs
    # every image at its own size.
    assert val_report.ok
    assert "split 'train'" in train_report.format()
    with pytest.raises(DataError, match="refusing to train: 4 problem"):
        require_valid(config)


def test_synthetic_split_is_valid():
    config = load_config(
        "demo",
        ["synthetic_train_size=6", "synthetic_val_size=2", "crop_size=128"],
    )
    reports = validate_data(config)
    assert all(report.ok for report in reports)
    assert [r.scanned for r in reports] == [6, 2]


def test_tfds_adapter_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    trimap = np.array([[1, 2], [3, 1]], dtype=np.uint8)  # pet, bg, border

    def as_dataset(builder, *args, **kwargs):
        # Replaces tfds's random fake data, whose masks hold any byte value.
        return tf.data.Dataset.from_tensors(
            {
                "image": np.full((40, 40, 3), 90, dtype=np.uint8),
                "segmentation_mask": np.kron(
                    trimap, np.ones((20, 20), dtype=np.uint8)
                )[..., None],
            }
        ).repeat(4)

    config = load_config(
        "pets", ["crop_size=48", "batch_size=2", "backbone_weights=none"]
    )
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        images, masks = next(
            iter(split_dataset(config, "test", training=False))
        )
    assert images.shape == (2, 40, 40, 3)  # their own size
    # trimap 1..3 -> class ids 0..2
    np.testing.assert_array_equal(
        masks.numpy()[0, ::20, ::20], [[0, 1], [2, 0]]
    )


def test_calibration_images_are_the_configs_count_of_training_crops():
    config = load_config(
        "demo",
        [
            "synthetic_train_size=4",
            "synthetic_image_size=40",
            "crop_size=40",
            "calibration_images=6",
        ],
    )
    images = calibration_images(config, size=(24, 32))
    assert len(images) == 6  # more than the split holds: it repeats
    assert {image.shape for image in images} == {(24, 32, 3)}
    assert len(calibration_images(config, size=24, count=2)) == 2
    with pytest.raises(ValueError, match="calibration_images=0"):
        load_config("demo", ["calibration_images=0"])
