"""Sizes as one side or height x width, and the names they give files."""

import pytest

from keras_deeplab.export.layout import tflite_name
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import height_width, parse_size, size_text


def test_a_side_or_height_by_width():
    assert parse_size("513", option="--size") == (513, 513)
    assert parse_size("512x1024", option="--size") == (512, 1024)
    assert parse_size("512X1024", option="--size") == (512, 1024)
    assert height_width(65) == (65, 65)
    assert height_width([48, 80]) == (48, 80)
    assert height_width("48x80") == (48, 80)
    assert size_text((513, 513)) == "513" and size_text(513) == "513"
    assert size_text((512, 1024)) == "512x1024"


@pytest.mark.parametrize("text", ["0", "-5", "abc", "4x4", "512x", "1x2x3"])
def test_bad_sizes_name_the_option(text):
    with pytest.raises(UserInputError, match=f"--size {text!r} is invalid"):
        parse_size(text, option="--size")


def test_square_tflite_files_keep_their_one_number_names():
    assert tflite_name(size=513) == "deeplab_fp32_513.tflite"
    assert tflite_name(size=(513, 513)) == "deeplab_fp32_513.tflite"
    assert (
        tflite_name(precision="int8", size=(512, 1024), io_type="uint8")
        == "deeplab_int8_512x1024_uint8.tflite"
    )
    assert tflite_name() == "deeplab_fp32_anysize.tflite"
