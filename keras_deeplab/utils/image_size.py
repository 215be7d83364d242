"""Image sizes given as one side or as height x width (`--size`, `--tile`).

A square size stays one number everywhere it is shown ("513", as in
`deeplab_fp32_513.tflite`); any other is "<height>x<width>" ("512x1024":
height first, as NHWC tensors and `numpy` shapes have it). Pure Python, so
the CLI parses sizes without loading TensorFlow.
"""

from keras_deeplab.utils.errors import UserInputError

# The largest side of a training crop or a fixed-size export: 8x the
# paper's 513 and 4x Cityscapes' full height; one 4096^2 float32 image
# through ResNet-50 at output stride 8 needs ~10 GB of activations.
MAX_IMAGE_SIDE = 4096


def parse_size(
    text, *, option: str, minimum: int = 8, maximum: int | None = None
) -> tuple:
    """(height, width) from "512" or "512x1024"; `option` names the
    argument in the error (e.g. "--size"); sides above `maximum` are
    refused with the reason."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < minimum:
        raise UserInputError(
            f"{option} {text!r} is invalid; expected a side or HxW (height "
            f"x width) in pixels, each at least {minimum}, e.g. {option} 512 "
            f"or {option} 512x1024."
        )
    if maximum is not None and max(size) > maximum:
        raise UserInputError(
            f"{option} {text!r} is too large; each side is at most {maximum} "
            f"pixels (a fixed input of {maximum}x{maximum} already needs "
            "gigabytes of activations, and phones' and servers' runtimes "
            "refuse far less)."
        )
    return size


def height_width(size) -> tuple:
    """(height, width) of a size given as one side, as (height, width) or
    as text ("512x1024")."""
    if isinstance(size, str):
        return parse_size(size, option="size")
    if isinstance(size, (int, float)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def size_text(size) -> str:
    """ "513" for a square size, "512x1024" (height x width) otherwise."""
    height, width = height_width(size)
    return str(height) if height == width else f"{height}x{width}"
