"""RGB colour masks: colours to class ids, palettes, config, validate-data
and the training pipeline."""

import numpy as np
import pytest
from PIL import Image

from keras_deeplab.data.colors import MaskColors, read_palette
from keras_deeplab.data.configured import DataSplits
from keras_deeplab.data.sources import DataError, read_mask
from keras_deeplab.data.validate import validate_data
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.utils.errors import UserInputError
from tests.data.fixtures import folder_config, make_folder_dataset

COLORS = ((0, 0, 0), (128, 64, 128), (220, 20, 60))  # background, road, person
INLINE = "mask_colors=[[0,0,0],[128,64,128],[220,20,60]]"


def _rgb(mask, colors=COLORS):
    table = np.array([*colors, *[(255, 255, 255)] * (256 - len(colors))])
    return table[mask].astype(np.uint8)


def _write_rgb_masks(root, masks, *, colours=None):
    """Each mask as RGB: COLORS by class id, the ignored pixels as class 0;
    or `colours` ({class id or 255: (r, g, b)})."""
    for stem, mask in masks.items():
        if colours is None:
            rgb = _rgb(np.where(mask == IGNORE_INDEX, 0, mask))
        else:
            table = np.zeros((256, 3), np.uint8)
            for class_id, colour in colours.items():
                table[class_id] = colour
            rgb = table[mask]
        Image.fromarray(rgb).save(root / "masks" / f"{stem}.png")


def test_colours_map_to_class_ids_and_unknown_ones_are_named(tmp_path):
    mask = np.array([[0, 1, 2], [2, 1, 0]])
    rgb = _rgb(mask)
    path = tmp_path / "m.png"
    Image.fromarray(rgb).save(path)
    colors = MaskColors(COLORS)
    np.testing.assert_array_equal(read_mask(path, colors=colors), mask)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "rgba.png", colors=colors), mask
    )
    rgb[0, :2] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(DataError, match=r"2 pixels in 1 colours not in .*"):
        read_mask(path, colors=colors)
    with pytest.raises(DataError, match=r"e\.g\. \(1, 2, 3\) on 2 pixels"):
        read_mask(path, colors=colors)
    ignoring = MaskColors(COLORS, unknown="ignore")
    np.testing.assert_array_equal(
        read_mask(path, colors=ignoring),
        [[IGNORE_INDEX, IGNORE_INDEX, 2], [2, 1, 0]],
    )
    with pytest.raises(UserInputError, match="lists a colour twice"):
        MaskColors([(0, 0, 0), (0, 0, 0)])


def test_palette_files_read_camvid_style_lines(tmp_path):
    palette = tmp_path / "label_colors.txt"
    palette.write_text(
        "# r g b name\n0 0 0\tVoid\n128,64,128 Road\n\n220 20 60\n"
    )
    assert read_palette(palette) == COLORS
    palette.write_text("0 0 0\n300 0 0 Bad\n")
    with pytest.raises(UserInputError, match="line 2: '300 0 0 Bad'"):
        read_palette(palette)
    with pytest.raises(UserInputError, match="does not exist"):
        read_palette(tmp_path / "missing.txt")


def test_config_takes_a_list_or_a_palette_file(tmp_path):
    inline = folder_config(
        tmp_path, "mask_colors=[[0,0,0],[128,64,128],[220,20,60]]"
    )
    assert inline.mask_colors == COLORS
    palette = tmp_path / "colors.txt"
    assert folder_config(tmp_path, f"mask_colors={palette}").mask_colors == (
        str(palette)
    )
    with pytest.raises(
        UserInputError, match="lists 2 colours but num_classes=3"
    ):
        folder_config(tmp_path, "mask_colors=[[0,0,0],[1,1,1]]")
    with pytest.raises(UserInputError, match="mask_colors="):
        folder_config(tmp_path, "mask_colors=[[0,0,0],[1,1],[2,2,2]]")
    with pytest.raises(UserInputError, match="mask_unknown_colors='skip'"):
        folder_config(tmp_path, "mask_unknown_colors=skip")


def test_validate_data_lists_the_colours_then_training_data_reads_them(
    tmp_path,
):
    root = tmp_path / "data"
    masks = make_folder_dataset(root)
    _write_rgb_masks(root, masks)
    reports = validate_data(folder_config(root))
    assert not reports[0].ok
    text = reports[0].format()
    assert "masks are RGB colours: 3 distinct" in text
    # Three colours of no known palette: their order is a guess, so no line
    # to paste (it would permute the classes silently).
    assert "mask_colors: [[" not in text and "[128, 64, 128]" in text
    assert "that order is a guess" in text
    config = folder_config(
        root, "mask_colors=[[0,0,0],[128,64,128],[220,20,60]]"
    )
    assert all(report.ok for report in validate_data(config))
    dataset = DataSplits(config).source("train")
    for _, mask, name in dataset.as_numpy_iterator():
        stem = name.decode().rsplit("/", 1)[-1].split(".")[0]
        expected = np.where(masks[stem] == IGNORE_INDEX, 0, masks[stem])
        np.testing.assert_array_equal(mask, expected)


def test_voc_palette_colours_are_suggested_in_class_id_order(tmp_path):
    """RGB masks in Pascal VOC's palette: the palette position is the class
    id, so the line is ready to paste, and VOC's ignore colour is set
    apart (it was listed in frequency order, ignore colour included)."""
    from keras_deeplab.labels import voc_palette

    root = tmp_path / "data"
    masks = make_folder_dataset(root)
    palette = voc_palette(256)
    colours = {0: palette[0], 1: palette[1], 2: palette[2], 255: palette[255]}
    _write_rgb_masks(root, masks, colours=colours)
    text = validate_data(folder_config(root))[0].format()
    assert "they are Pascal VOC's palette colours" in text
    assert "mask_colors: [[0, 0, 0], [128, 0, 0], [0, 128, 0]]" in text
    assert "[224, 224, 192] is Pascal VOC's palette's ignore colour" in text
