"""Segment image files: index-mask PNG, colour overlay and probabilities."""

from pathlib import Path

import keras
import numpy as np

from keras_deeplab.atomic import atomic_file
from keras_deeplab.data.sources import read_image
from keras_deeplab.errors import UserInputError
from keras_deeplab.inference import predict_probabilities
from keras_deeplab.models import inference_model
from keras_deeplab.visualize import overlay, save_mask_png, save_png


def segment_files(
    model, paths, out_dir, *, probabilities=False, scales=(1.0,), flip=False
):
    """Writes `<stem>_mask.png`, `<stem>_overlay.png` (+ `.npy`) per image.

    Images are processed one at a time at their own size.

    Args:
        model: DeepLabV3 model.
        paths: iterable of image paths (JPEG/PNG).
        out_dir: output folder (created).
        probabilities: bool. Also save float32 (h, w, classes) `.npy` files.
        scales: tuple of floats. Multi-scale inference scales.
        flip: bool. Add flipped inference.

    Returns:
        List of written mask paths.

    Raises:
        UserInputError: if two images share a file stem (their outputs
            would overwrite each other).
        DataError: naming an image that cannot be read (before any output
            for it is written).
    """
    model = inference_model(model)
    out_dir = Path(out_dir)
    paths = [Path(path) for path in paths]
    stems = {}
    for path in paths:
        if path.stem in stems:
            raise UserInputError(
                f"{str(stems[path.stem])!r} and {str(path)!r} would both "
                f"write {path.stem}_mask.png; predict them into separate "
                "--out folders or rename one."
            )
        stems[path.stem] = path
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    written = []
    for path in paths:
        image = read_image(path)
        probs = predict_probabilities(
            model, image[None].astype("float32"), scales=scales, flip=flip
        )[0]
        mask = np.argmax(probs, axis=-1).astype(np.uint8)
        written.append(save_mask_png(out_dir / f"{path.stem}_mask.png", mask))
        save_png(out_dir / f"{path.stem}_overlay.png", overlay(image, mask))
        if probabilities:
            with atomic_file(out_dir / f"{path.stem}_probabilities.npy") as tmp:
                np.save(tmp, probs.astype(np.float32))
        progress.add(1)
    return written
