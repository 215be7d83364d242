"""Tiny datasets written in the real on-disk layouts of each reader."""

from pathlib import Path

import numpy as np
from PIL import Image

from keras_deeplab.config import load_config
from keras_deeplab.visualize.masks import class_palette


def write_image(path, height=24, width=32, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = Image.fromarray(array)
    if mode != "RGB":
        picture = picture.convert(mode)
    picture.save(path)
    return path


def write_mask(path, mask, *, palette=False):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L")
    if palette:
        picture = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
        picture.putpalette(class_palette(256).ravel().tolist())
    picture.save(path)
    return path


def pattern_mask(height=24, width=32, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, num_classes, (height, width)).astype(np.uint8)
    mask[0, :] = 255  # a border of "ignore", as in VOC
    return mask


def make_folder_dataset(
    root, *, stems_train=("a", "b", "c"), stems_val=("d",), num_classes=3
):
    """root/images/*.jpg|png, root/masks/*.png and train.txt / val.txt."""
    root = Path(root)
    masks = {}
    for index, stem in enumerate(stems_train + stems_val):
        suffix = ".jpg" if index % 2 else ".png"
        write_image(root / "images" / f"{stem}{suffix}", seed=index)
        masks[stem] = pattern_mask(num_classes=num_classes, seed=index)
        write_mask(
            root / "masks" / f"{stem}.png", masks[stem], palette=index % 2 == 0
        )
    (root / "train.txt").write_text("\n".join(stems_train) + "\n")
    (root / "val.txt").write_text("\n".join(stems_val) + "\n")
    return masks


def make_voc(root, sbd_root=None):
    """VOCdevkit/VOC2012 with palette masks, and optionally SBD .mat masks."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    masks = {}
    for split, stems in ids.items():
        (lists / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for seed, stem in enumerate(stems):
            write_image(voc / "JPEGImages" / f"{stem}.jpg", seed=seed)
            masks[stem] = pattern_mask(num_classes=21, seed=seed)
            write_mask(
                voc / "SegmentationClass" / f"{stem}.png",
                masks[stem],
                palette=True,
            )
    if sbd_root is not None:
        from scipy.io import savemat

        dataset = Path(sbd_root) / "benchmark_RELEASE" / "dataset"
        (dataset / "cls").mkdir(parents=True)
        # SBD: one VOC-train id, one new id, one VOC-val id (must be dropped)
        sbd_ids = ["2007_000001", "2008_000009", "2007_000003"]
        (dataset / "train.txt").write_text("\n".join(sbd_ids[:2]) + "\n")
        (dataset / "val.txt").write_text(sbd_ids[2] + "\n")
        for seed, stem in enumerate(sbd_ids):
            mask = pattern_mask(num_classes=21, seed=10 + seed)
            mask[mask == 255] = 0  # SBD masks have no ignore border
            masks.setdefault(f"sbd/{stem}", mask)
            savemat(
                dataset / "cls" / f"{stem}.mat",
                {
                    "GTcls": {
                        "Segmentation": mask,
                        "CategoriesPresent": np.unique(mask),
                    }
                },
            )
        write_image(voc / "JPEGImages" / "2008_000009.jpg", seed=9)
    return voc, masks


def make_cityscapes(root):
    """leftImg8bit/val/<city>/*_leftImg8bit.png + gtFine labelIds."""
    root = Path(root)
    stem = "frankfurt_000000_000294"
    write_image(
        root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png"
    )
    label_ids = np.array([[7, 8, 26, 0], [33, 1, 24, 23]], dtype=np.uint8)
    label_ids = np.kron(label_ids, np.ones((12, 8), dtype=np.uint8))
    write_mask(
        root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png",
        label_ids,
    )
    return label_ids


def make_ade20k(root):
    """ADEChallengeData2016/images|annotations/validation."""
    base = Path(root) / "ADEChallengeData2016"
    write_image(base / "images" / "validation" / "ADE_val_00000001.jpg")
    stored = np.array([[0, 1, 150, 12]], dtype=np.uint8)
    stored = np.kron(stored, np.ones((24, 8), dtype=np.uint8))
    write_mask(
        base / "annotations" / "validation" / "ADE_val_00000001.png", stored
    )
    return stored


def folder_config(root, *overrides):
    """A 3-class `folder` config on `root` (crop 32, batch 2)."""
    return load_config(
        None,
        [
            "dataset=folder",
            f"data_dir={root}",
            "num_classes=3",
            "crop_size=32",
            "batch_size=2",
            *overrides,
        ],
    )
