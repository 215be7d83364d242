"""Readers on tiny fixtures in the real layouts; decoding edge cases."""

import numpy as np
import pytest
from PIL import Image

from keras_deeplab.data.sources import (
    DataError,
    ade20k_examples,
    cityscapes_examples,
    folder_examples,
    read_image,
    read_mask,
    voc_examples,
)
from tests.data.fixtures import (
    make_ade20k,
    make_cityscapes,
    make_folder_dataset,
    make_voc,
    write_image,
    write_mask,
)


def test_folder_pairs_by_stem_and_split_list(tmp_path):
    masks = make_folder_dataset(tmp_path)
    train = folder_examples(tmp_path, split="train")
    assert [e.image.stem for e in train] == ["a", "b", "c"]
    assert {e.image.suffix for e in train} == {".png", ".jpg"}
    for example in train:
        np.testing.assert_array_equal(
            read_mask(example.mask), masks[example.image.stem]
        )
    assert [e.image.stem for e in folder_examples(tmp_path, split="val")] == [
        "d"
    ]


def test_folder_split_subfolders(tmp_path):
    write_image(tmp_path / "train" / "images" / "x.png")
    write_mask(tmp_path / "train" / "masks" / "x.png", np.zeros((24, 32)))
    (example,) = folder_examples(tmp_path, split="train")
    assert example.image.name == "x.png"


def test_folder_without_split_is_a_clear_error(tmp_path):
    make_folder_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        folder_examples(tmp_path, split="test")


def test_palette_mask_gives_indices_not_colours(tmp_path):
    mask = np.array([[0, 1, 15], [20, 255, 3]], dtype=np.uint8)
    path = write_mask(tmp_path / "m.png", mask, palette=True)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_mask(path), mask)


def test_image_modes_are_converted_to_rgb(tmp_path):
    for mode in ("L", "RGBA", "P"):
        image = read_image(write_image(tmp_path / f"{mode}.png", mode=mode))
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    sixteen = np.full((4, 5), 65535, dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").max() == 255


@pytest.mark.parametrize("problem", ["empty", "truncated", "garbage"])
def test_broken_images_name_the_file(tmp_path, problem):
    path = write_image(tmp_path / "broken.png", height=64, width=64)
    if problem == "empty":
        path.write_bytes(b"")
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(path)


def test_colour_mask_is_refused(tmp_path):
    path = write_image(tmp_path / "rgb_mask.png")
    with pytest.raises(DataError, match="is a colour image"):
        read_mask(path)


def test_voc_splits_and_train_aug(tmp_path):
    voc, masks = make_voc(tmp_path / "voc", sbd_root=tmp_path / "sbd")
    val = voc_examples(tmp_path / "voc", split="val")
    assert [e.image.stem for e in val] == ["2007_000003"]
    aug = voc_examples(
        tmp_path / "voc", split="train_aug", sbd_root=tmp_path / "sbd"
    )
    stems = {e.image.stem: e for e in aug}
    # VOC train + SBD train/val, minus VOC val, VOC masks preferred.
    assert sorted(stems) == ["2007_000001", "2007_000002", "2008_000009"]
    assert stems["2007_000001"].mask.suffix == ".png"
    assert stems["2008_000009"].mask.suffix == ".mat"
    np.testing.assert_array_equal(
        read_mask(stems["2008_000009"].mask), masks["sbd/2008_000009"]
    )


def test_voc_train_aug_needs_sbd(tmp_path):
    make_voc(tmp_path)
    with pytest.raises(ValueError, match="sbd_dir="):
        voc_examples(tmp_path, split="train_aug")


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    make_cityscapes(tmp_path)
    (example,) = cityscapes_examples(tmp_path, split="val")
    mask = read_mask(example.mask, example.label_table)
    # road 7->0, sidewalk 8->1, car 26->13, unlabeled 0->255,
    # bicycle 33->18, ego vehicle 1->255, person 24->11, sky 23->10
    expected = np.array([[0, 1, 13, 255], [18, 255, 11, 10]], dtype=np.uint8)
    np.testing.assert_array_equal(mask[::12, ::8], expected)


def test_ade20k_shifts_labels_and_ignores_other(tmp_path):
    make_ade20k(tmp_path)
    (example,) = ade20k_examples(tmp_path, split="validation")
    mask = read_mask(example.mask, example.label_table)
    np.testing.assert_array_equal(mask[0, ::8], [255, 0, 149, 11])
