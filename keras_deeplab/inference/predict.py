"""Segment image files: index-mask PNG, colour overlay and probabilities."""

from pathlib import Path

import numpy as np

from keras_deeplab.data.sources import read_image
from keras_deeplab.inference.batch import InferenceOptions, class_maps
from keras_deeplab.inference.probabilities import (
    confidence_map,
    predict_probabilities,
)
from keras_deeplab.inference.tiling import sliding_window_predict
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.models.derived import inference_model
from keras_deeplab.utils.atomic import atomic_file, atomic_write_bytes
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import Progress
from keras_deeplab.visualize.masks import (
    gray_png_bytes,
    prediction_picture,
    save_mask_png,
    save_png,
)

MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.png"
PROBABILITIES_SUFFIX = "_probabilities.npy"
CONFIDENCE_SUFFIX = "_confidence.png"


def output_paths(out_dir, stem, *, probabilities=False, confidence=False):
    """{suffix: path} of the files `segment_files` writes for one stem."""
    suffixes = [MASK_SUFFIX, OVERLAY_SUFFIX]
    suffixes += [PROBABILITIES_SUFFIX] if probabilities else []
    suffixes += [CONFIDENCE_SUFFIX] if confidence else []
    return {s: Path(out_dir) / f"{stem}{s}" for s in suffixes}


def _check_outputs(paths, out_dir, *, probabilities, confidence, overwrite):
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
        for output in output_paths(
            out_dir, stem, probabilities=probabilities, confidence=confidence
        ).values()
        if output.exists()
    ]
    if existing:
        raise FileExistsError(
            f"{len(existing)} outputs already exist in {str(out_dir)!r} (e.g. "
            f"{existing[0].name}), which could be someone's ground truth; "
            "choose another --out or pass --overwrite."
        )


def _segment(model, image, options, *, keep_probabilities):
    """(class ids, confidence or None, float32 probabilities or None)."""
    if not keep_probabilities:
        ids, scores = class_maps(model, image[None], options)
        return ids[0], (None if scores is None else scores[0]), None
    if options.tiling is None:
        probs = predict_probabilities(
            model,
            image[None].astype("float32"),
            scales=options.scales,
            flip=options.flip,
        )[0]
    else:  # the whole image's probabilities, as asked: image-sized memory
        probs = sliding_window_predict(
            model,
            image,
            options.tiling,
            scales=options.scales,
            flip=options.flip,
            probabilities=True,
        )
    scores = confidence_map(probs) if options.confidence else None
    return np.argmax(probs, axis=-1).astype(np.uint8), scores, probs


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
    confidence=False,
):
    """Writes `<stem>_mask.png`, `<stem>_overlay.png` (+ `.npy`,
    `_confidence.png`) per image.

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
        confidence: bool. Also save `<stem>_confidence.png`: the top class
            probability x 255, 8-bit grayscale (uncalibrated).

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
        paths,
        out_dir,
        probabilities=probabilities,
        confidence=confidence,
        overwrite=overwrite,
    )
    options = InferenceOptions(
        scales=scales, flip=flip, tiling=tiling, confidence=confidence
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(paths), unit="image", verb="segmented")
    written = []
    for path in paths:
        image = read_image(path)
        mask, scores, probs = _segment(
            model, image, options, keep_probabilities=probabilities
        )
        paths_of = output_paths(
            out_dir,
            path.stem,
            probabilities=probabilities,
            confidence=confidence,
        )
        written.append(save_mask_png(paths_of[MASK_SUFFIX], mask))
        save_png(
            paths_of[OVERLAY_SUFFIX], prediction_picture(image, mask, names)
        )
        if probabilities:
            with atomic_file(paths_of[PROBABILITIES_SUFFIX]) as temporary:
                np.save(temporary, probs.astype(np.float32))
        if confidence:
            atomic_write_bytes(
                paths_of[CONFIDENCE_SUFFIX], gray_png_bytes(scores)
            )
        progress.update(len(written))
    progress.finish(len(written))
    return written
