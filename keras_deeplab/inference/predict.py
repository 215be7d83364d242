"""Segment image files: index-mask PNG, colour overlay and probabilities."""

from pathlib import Path

import numpy as np

from keras_deeplab.data.sources import read_image
from keras_deeplab.inference.probabilities import predict_probabilities
from keras_deeplab.inference.tiling import sliding_window_predict
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.models.derived import inference_model
from keras_deeplab.utils.atomic import atomic_file
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import Progress
from keras_deeplab.visualize.masks import (
    prediction_picture,
    save_mask_png,
    save_png,
)

MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.png"
PROBABILITIES_SUFFIX = "_probabilities.npy"


def output_paths(out_dir, stem, *, probabilities=False) -> list:
    """The files `segment_files` writes for one image stem."""
    out_dir = Path(out_dir)
    suffixes = [MASK_SUFFIX, OVERLAY_SUFFIX]
    suffixes += [PROBABILITIES_SUFFIX] if probabilities else []
    return [out_dir / f"{stem}{suffix}" for suffix in suffixes]


def _check_outputs(paths, out_dir, *, probabilities, overwrite):
    """Refuses stems that collide, and outputs that exist unless asked."""
    stems = {}
    for path in paths:
        if path.stem in stems:
            raise UserInputError(
                f"{str(stems[path.stem])!r} and {str(path)!r} would both "
                f"write {path.stem}{MASK_SUFFIX}; predict them into separate "
                "--out folders or rename one."
            )
        stems[path.stem] = path
    if overwrite:
        return
    existing = [
        output
        for stem in stems
        for output in output_paths(out_dir, stem, probabilities=probabilities)
        if output.exists()
    ]
    if existing:
        raise FileExistsError(
            f"{len(existing)} outputs already exist in {str(out_dir)!r} (e.g. "
            f"{existing[0].name}), which could be someone's ground truth; "
            "choose another --out or pass --overwrite."
        )


def _segment(model, image, *, scales, flip, tiling, keep_probabilities):
    """(uint8 class ids, float32 probabilities or None) of one image."""
    if tiling is not None and not keep_probabilities:
        ids = sliding_window_predict(
            model, image, tiling, scales=scales, flip=flip
        )
        return ids.astype(np.uint8), None
    if tiling is None:
        probs = predict_probabilities(
            model, image[None].astype("float32"), scales=scales, flip=flip
        )[0]
    else:  # the whole image's probabilities, as asked: image-sized memory
        probs = sliding_window_predict(
            model, image, tiling, scales=scales, flip=flip, probabilities=True
        )
    return np.argmax(probs, axis=-1).astype(np.uint8), probs


def segment_files(
    model,
    paths,
    out_dir,
    *,
    probabilities=False,
    scales=(1.0,),
    flip=False,
    overwrite=False,
    tiling=None,
):
    """Writes `<stem>_mask.png`, `<stem>_overlay.png` (+ `.npy`) per image.

    Images are processed one at a time at their own size. The overlay has a
    legend of the classes it shows, named by the model's class names.

    Args:
        model: segmentation model.
        paths: iterable of image paths (JPEG/PNG).
        out_dir: output folder (created).
        probabilities: bool. Also save float32 (h, w, classes) `.npy` files.
        scales: tuple of floats. Multi-scale inference scales.
        flip: bool. Add flipped inference.
        overwrite: bool. Replace outputs that exist; refused otherwise.
        tiling: None, or a `tiling.Tiling`: sliding-window inference, for
            images too large to run whole.

    Returns:
        List of written mask paths.

    Raises:
        UserInputError: if two images share a file stem.
        FileExistsError: if an output exists and `overwrite` is False
            (checked before anything is written).
        DataError: naming an image that cannot be read (before any output
            for it is written).
    """
    names = class_names(model)
    model = inference_model(model)
    out_dir = Path(out_dir)
    paths = [Path(path) for path in paths]
    _check_outputs(
        paths, out_dir, probabilities=probabilities, overwrite=overwrite
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(paths), unit="image", verb="segmented")
    written = []
    for path in paths:
        image = read_image(path)
        mask, probs = _segment(
            model,
            image,
            scales=scales,
            flip=flip,
            tiling=tiling,
            keep_probabilities=probabilities,
        )
        mask_path, overlay_path, *npy = output_paths(
            out_dir, path.stem, probabilities=probabilities
        )
        written.append(save_mask_png(mask_path, mask))
        save_png(overlay_path, prediction_picture(image, mask, names))
        if npy:
            with atomic_file(npy[0]) as temporary:
                np.save(temporary, probs.astype(np.float32))
        progress.update(len(written))
    progress.finish(len(written))
    return written
