"""On-disk datasets: find (image, mask) file pairs and decode them.

Readers for a plain folder, Pascal VOC 2012 (+ SBD "aug" masks), Cityscapes
and ADE20K. Every reader returns `Example`s: file paths plus the lookup table
that maps the stored label values to training ids (255 = ignore). Decoding
goes through `read_image` / `read_mask`, shared by training and
`validate-data`, so both report the same problems.
"""

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keras_deeplab.data.colors import distinct_colors
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.utils.errors import UserInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# 8192 x 8192: larger files (or decompression bombs claiming to be) are
# refused from their header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 8192 * 8192
# Cityscapes labelIds -> the 19 train ids of the benchmark; others ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


class DataError(UserInputError):
    """A file that cannot be used as training data; the message names it."""


class ColorMaskError(DataError):
    """An RGB colour mask read without `mask_colors`; `colors` and
    `counts` are its distinct colours, for validate-data's suggestion."""

    def __init__(self, message, colors, counts):
        super().__init__(message)
        self.colors, self.counts = colors, counts


def identity_table():
    return np.arange(256, dtype=np.uint8)


def shifted_table():
    """Stored 0 ("other"/unlabelled) -> ignore, k -> k - 1 (ADE20K, pets)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[1:] = np.arange(255, dtype=np.uint8)
    return table


def cityscapes_table():
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    return table


@dataclasses.dataclass(frozen=True)
class Example:
    """One image/mask pair on disk and the table mapping its labels."""

    image: Path
    mask: Path
    label_table: np.ndarray = dataclasses.field(
        default_factory=identity_table, compare=False, repr=False
    )
    # `colors.MaskColors` for masks stored as RGB colours, else None.
    colors: object = dataclasses.field(default=None, compare=False, repr=False)


def _open(path, kind):
    """Opens, size-checks, decodes and EXIF-orients one image file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{kind} {str(path)!r} is a folder; expected an image file "
            "(JPEG or PNG)."
        )
    if not path.is_file():
        raise DataError(f"{kind} {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise DataError(f"{kind} {str(path)!r} is empty (0 bytes).")
    return _decoded(path, f"{kind} {str(path)!r}")


def _decoded(source, label):
    """Decodes a file or file object; `label` names it in errors.

    The camera's EXIF orientation is applied, so a phone photo stored
    sideways is read upright, as viewers show it and as masks are drawn.
    """
    try:
        picture = Image.open(source)
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{label} is refused as a decompression bomb: {err}"
        ) from err
    except UnidentifiedImageError as err:
        raise DataError(
            f"{label} is unreadable: its bytes are in no image format this "
            "reader knows (JPEG, PNG, BMP, GIF, TIFF, WebP, ...)."
        ) from err
    except OSError as err:
        raise _unreadable(label, err) from err
    width, height = picture.size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{label} declares {width}x{height} pixels, more "
            f"than the {MAX_IMAGE_PIXELS:,} this reader decodes; resize it "
            "(or check that it is not a decompression bomb)."
        )
    try:
        picture.load()
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises
        raise _unreadable(label, err) from err
    return ImageOps.exif_transpose(picture)


def _unreadable(label, err):
    return DataError(f"{label} is unreadable or truncated: {err}.")


def _rgb(picture) -> np.ndarray:
    """RGB uint8 (h, w, 3): grayscale, palette and RGBA converted (alpha
    dropped); 16-bit images keep their 8 most significant bits."""
    if picture.mode in ("I;16", "I;16B", "I"):
        array = np.asarray(picture).astype(np.uint32)
        array = (array >> 8 if array.max() > 255 else array).astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=-1)
    return np.asarray(picture.convert("RGB"))


def read_image(path) -> np.ndarray:
    """Decodes an image file to RGB uint8 (h, w, 3) (see `_rgb`).

    Raises:
        DataError: naming the file if it is missing, empty or undecodable.
    """
    return _rgb(_open(path, "image"))


def decode_image(data: bytes, name) -> np.ndarray:
    """`read_image` of a file's bytes (read from any file system); `name`
    is the file's name in errors.

    Raises:
        DataError: naming the file if it is empty or undecodable.
    """
    label = f"image {str(name)!r}"
    if not data:
        raise DataError(f"{label} is empty (0 bytes).")
    return _rgb(_decoded(io.BytesIO(data), label))


def _mat_mask(path):
    # SBD stores masks as MATLAB structs; loadmat parses MAT v5 data and
    # never unpickles Python objects.
    from scipy.io import loadmat

    try:
        record = loadmat(path, squeeze_me=True, struct_as_record=False)
        return np.asarray(record["GTcls"].Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as err:
        raise DataError(
            f"mask {str(path)!r} is not an SBD GTcls .mat file: {err}."
        ) from err


def read_mask(path, label_table=None, colors=None) -> np.ndarray:
    """Decodes a class-id mask (PNG, palette PNG or SBD .mat) to uint8 (h, w).

    Palette PNGs (VOC style) yield their palette indices, not colours. A mask
    stored as RGB is read through `colors` (a `colors.MaskColors`), or
    accepted without them only when its three channels are equal.

    Args:
        path: mask file.
        label_table: optional uint8 (256,) table applied to the stored values.
        colors: optional `MaskColors` for RGB colour masks.

    Raises:
        DataError: naming the file if it cannot be a class-id mask.
    """
    path = Path(path)
    if path.suffix == ".mat":
        if not path.is_file():
            raise DataError(f"mask {str(path)!r} does not exist.")
        array = _mat_mask(path)
    else:
        picture = _open(path, "mask")
        array = np.asarray(picture)
        if array.ndim == 3 and colors is not None:
            try:
                return colors.to_class_ids(array, path)
            except UserInputError as err:
                raise DataError(str(err)) from err
        if array.ndim == 3:
            if picture.mode not in ("RGB", "RGBA") or not (
                np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])
            ):
                raise ColorMaskError(
                    f"mask {str(path)!r} is a colour image (mode "
                    f"{picture.mode}); expected class ids in a single-channel "
                    "or palette PNG, or set mask_colors (validate-data "
                    "lists the colours).",
                    *distinct_colors(array),
                )
            array = array[..., 0]
    if array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise DataError(
            f"mask {str(path)!r} holds values outside 0..255 (max "
            f"{array.max()}); expected 8-bit class ids."
        )
    array = array.astype(np.uint8)
    return array if label_table is None else label_table[array]


def _stems(directory, suffixes):
    """{stem: path}; a stem with two files (a.jpg and a.png) is an error."""
    stems = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in stems:
            raise DataError(
                f"{str(stems[path.stem])!r} and {str(path)!r} share the stem "
                f"{path.stem!r}; keep one file per stem in {str(directory)!r}."
            )
        stems[path.stem] = path
    return stems


def _read_list(path):
    """Stems of a split file, one per line (spaces belong to the stem)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"split file {str(path)!r} is not UTF-8 text; expected one file "
            "stem per line."
        ) from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _require_dir(path, what):
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    return Path(path)


def folder_examples(
    root,
    *,
    split,
    image_dir="images",
    mask_dir="masks",
    split_list=None,
    colors=None,
):
    """Pairs images and masks of a plain folder dataset by file stem.

    Layout: `root/<image_dir>/*.jpg|png` and `root/<mask_dir>/*.png`. The split
    is chosen by `split_list` (a file of stems, one per line), else
    `root/<split>.txt`, else the folders `root/<split>/<image_dir>` and
    `root/<split>/<mask_dir>`.

    Raises:
        FileNotFoundError: if none of those exist.
        DataError: if a listed image has no image file; images without a
            mask are returned with the expected mask path so validation
            reports them.

    `colors` (a `colors.MaskColors`) reads masks stored as RGB colours.
    """
    root = Path(root)
    list_file = Path(split_list) if split_list else root / f"{split}.txt"
    if (
        split_list is None
        and not list_file.is_file()
        and (root / split / image_dir).is_dir()
    ):
        root = root / split
        list_file = None
    images = _stems(
        _require_dir(root / image_dir, "image folder"), IMAGE_SUFFIXES
    )
    masks = _stems(_require_dir(root / mask_dir, "mask folder"), (".png",))
    if list_file is None:
        stems = sorted(images)
    elif list_file.is_file():
        stems = _read_list(list_file)
    else:
        raise FileNotFoundError(
            f"no split {split!r} in {str(root)!r}: expected a list file "
            f"{str(list_file)!r} or folders {split}/{image_dir} and "
            f"{split}/{mask_dir}."
        )
    missing = [stem for stem in stems if stem not in images]
    if missing:
        raise DataError(
            f"split {split!r} lists {len(missing)} stems with no image in "
            f"{str(root / image_dir)!r}: {missing[:5]}."
        )
    return [
        Example(
            images[stem],
            masks.get(stem, root / mask_dir / f"{stem}.png"),
            colors=colors,
        )
        for stem in stems
    ]


def _voc_root(root):
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no Pascal VOC 2012 in {str(root)!r}: expected JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/ under it or under "
        "VOCdevkit/VOC2012/."
    )


def _sbd_root(root):
    root = Path(root)
    for candidate in (
        root,
        root / "dataset",
        root / "benchmark_RELEASE" / "dataset",
    ):
        if (candidate / "cls").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no SBD in {str(root)!r}: expected cls/*.mat and train.txt under it "
        "or under benchmark_RELEASE/dataset/."
    )


def voc_examples(root, *, split, sbd_root=None):
    """Pascal VOC 2012 segmentation; split "train_aug" adds SBD masks.

    "train_aug" is the 10,582-image set of the paper: SBD train + val and VOC
    train, minus every VOC val image. VOC masks win where both exist.
    """
    voc = _voc_root(root)
    lists = voc / "ImageSets" / "Segmentation"
    if split != "train_aug":
        stems = _read_list(_existing(lists / f"{split}.txt", "VOC split"))
        return [
            Example(
                voc / "JPEGImages" / f"{s}.jpg",
                voc / "SegmentationClass" / f"{s}.png",
            )
            for s in stems
        ]
    if sbd_root is None:
        raise UserInputError(
            "split 'train_aug' needs the SBD masks; pass --set "
            "sbd_dir=/path/to/benchmark_RELEASE."
        )
    sbd = _sbd_root(sbd_root)
    val = set(_read_list(_existing(lists / "val.txt", "VOC split")))
    stems = set(_read_list(_existing(lists / "train.txt", "VOC split")))
    for name in ("train.txt", "val.txt"):
        stems |= set(_read_list(_existing(sbd / name, "SBD split")))
    examples = []
    for stem in sorted(stems - val):
        voc_mask = voc / "SegmentationClass" / f"{stem}.png"
        mask = voc_mask if voc_mask.is_file() else sbd / "cls" / f"{stem}.mat"
        examples.append(Example(voc / "JPEGImages" / f"{stem}.jpg", mask))
    return examples


def _existing(path, what):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
    return Path(path)


def cityscapes_examples(root, *, split):
    """Cityscapes fine annotations: labelIds mapped to the 19 train ids."""
    image_root = _require_dir(
        Path(root) / "leftImg8bit" / split, "Cityscapes image folder"
    )
    table = cityscapes_table()
    examples = []
    for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        mask = (
            Path(root)
            / "gtFine"
            / split
            / image.parent.name
            / f"{stem}_gtFine_labelIds.png"
        )
        examples.append(Example(image, mask, table))
    return examples


def ade20k_examples(root, *, split):
    """ADE20K (SceneParsing): 150 classes, stored 0 ("other") ignored."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    image_root = _require_dir(root / "images" / split, "ADE20K image folder")
    table = shifted_table()
    return [
        Example(
            image, root / "annotations" / split / f"{image.stem}.png", table
        )
        for image in sorted(image_root.glob("*.jpg"))
    ]
