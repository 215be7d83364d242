"""Deterministic synthetic segmentation data: textured shapes on clutter.

The class of a pixel depends on the shape it belongs to, never on its colour:
every instance gets a random colour and every background a random striped
texture; shapes overlap and occlude each other and may leave the frame. Pure
NumPy, so it runs anywhere and is reproducible from (seed, index) alone.
"""

from pathlib import Path

import numpy as np

from keras_deeplab.labels import SYNTHETIC_CLASSES
from keras_deeplab.utils.errors import UserInputError

NUM_CLASSES = len(SYNTHETIC_CLASSES)
MAX_INSTANCES = 5
_RING_HOLE = 0.55  # inner / outer radius of a ring


def _rotated(xs, ys, cx, cy, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, ys - cy
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _shape_mask(class_id, xs, ys, *, cx, cy, radius, angle):
    """Boolean mask of one instance of `class_id`."""
    u, v = _rotated(xs, ys, cx, cy, angle)
    squared = u * u + v * v
    if class_id == 1:
        return squared <= radius**2
    if class_id == 2:
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if class_id == 3:
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = 2 * np.pi * k / 3
            inside &= u * np.cos(theta) + v * np.sin(theta) <= radius * 0.5
        return inside
    return (squared <= radius**2) & (squared >= (_RING_HOLE * radius) ** 2)


def _texture(rng, xs, ys, size):
    """Two random colours blended by a random oriented wave plus noise."""
    colours = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(1, 6) * 2 * np.pi / size
    wave = np.cos(frequency * (np.cos(angle) * xs + np.sin(angle) * ys))
    blend = (0.5 + 0.5 * wave)[..., None]
    noise = rng.normal(0, rng.uniform(2, 20), size=xs.shape + (3,))
    return colours[0] * blend + colours[1] * (1 - blend) + noise


def _instance_paint(rng, xs, ys, size):
    """A random colour with a gentle shading gradient and mild noise.

    Instances are smoother than the striped background, so the boundary is
    visible, but their colour is random: only the outline tells the class.
    """
    colour = rng.uniform(0, 255, size=3)
    slope = rng.normal(0, 40, size=(2, 3)) / size
    shading = xs[..., None] * slope[0] + ys[..., None] * slope[1]
    noise = rng.normal(0, rng.uniform(1, 6), size=xs.shape + (3,))
    return colour + shading - shading.mean() + noise


def synthetic_sample(index: int, *, size: int = 128, seed=0):
    """Generates one image and its mask.

    Args:
        index: int. Sample number; the same (seed, index) always gives the
            same sample.
        size: int. Height and width in pixels. Defaults to 128.
        seed: int or tuple of ints. Dataset seed; the pipeline passes
            (seed, split number) so splits never share a sample.

    Returns:
        (image uint8 (size, size, 3), mask uint8 (size, size)) with mask
        values in 0..NUM_CLASSES-1.
    """
    if size < 8:
        raise UserInputError(
            f"size={size!r} is too small; expected >= 8 pixels."
        )
    rng = np.random.default_rng([*np.atleast_1d(seed), index])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    image = _texture(rng, xs, ys, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(rng.integers(2, MAX_INSTANCES + 1)):
        class_id = int(rng.integers(1, NUM_CLASSES))
        radius = rng.uniform(0.12, 0.3) * size
        # Centres may sit near the border so some shapes leave the frame.
        cx, cy = rng.uniform(-0.05, 1.05, size=2) * size
        inside = _shape_mask(
            class_id,
            xs,
            ys,
            cx=cx,
            cy=cy,
            radius=radius,
            angle=rng.uniform(0, 2 * np.pi),
        )
        # Later instances occlude earlier ones, in the mask and the image.
        image[inside] = _instance_paint(rng, xs, ys, size)[inside]
        mask[inside] = class_id
    return np.clip(image, 0, 255).astype(np.uint8), mask


def synthetic_arrays(count: int, *, size: int = 128, seed=0):
    """Stacks `count` samples: (images (n, s, s, 3), masks (n, s, s)) uint8."""
    samples = [synthetic_sample(i, size=size, seed=seed) for i in range(count)]
    images, masks = zip(*samples, strict=True)
    return np.stack(images), np.stack(masks)


def write_folder_dataset(
    root, *, train_count: int, val_count: int, size: int = 128, seed=0
):
    """Writes synthetic data in the `folder` dataset layout.

    root/images/<stem>.jpg (RGB JPEG, as photos usually are),
    root/masks/<stem>.png (VOC-style palette PNG of class ids) and
    root/train.txt, root/val.txt listing the stems of each split. Train with
    `dataset=folder, data_dir=root, num_classes=NUM_CLASSES`.

    Returns:
        The root as a Path.
    """
    from PIL import Image

    from keras_deeplab.visualize.masks import save_mask_png

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    splits = {"train": range(train_count)}
    splits["val"] = range(train_count, train_count + val_count)
    for split, indices in splits.items():
        stems = [f"{split}_{index:05d}" for index in indices]
        for stem, index in zip(stems, indices, strict=True):
            image, mask = synthetic_sample(index, size=size, seed=seed)
            Image.fromarray(image).save(root / "images" / f"{stem}.jpg")
            save_mask_png(root / "masks" / f"{stem}.png", mask)
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root
