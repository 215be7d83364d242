"""`keras-deeplab predict`: image files (a mask PNG and a picture each) and
rasters (streamed, georeferenced; `inference.raster`)."""

import time

from keras_deeplab.cli.commands import (
    inference_options,
    model_from_args,
    output_dir,
)
from keras_deeplab.utils.errors import UserInputError


def predict(args, *, config):
    """Segments the image files and rasters `args.images` names."""
    from keras_deeplab.inference.predict import segment_files
    from keras_deeplab.inference.raster import is_raster

    out = output_dir(args.out)
    rasters = [path for path in args.images if is_raster(path)]
    images = [path for path in args.images if not is_raster(path)]
    _check_raster_options(args, rasters)
    model = model_from_args(args, config, precision=args.precision)
    options = inference_options(args, config)
    if images:
        written = segment_files(
            model,
            images,
            out,
            probabilities=args.probabilities,
            overwrite=args.overwrite,
            **options,
        )
        count = len(written)
        print(
            f"wrote {count} {'mask' if count == 1 else 'masks'} and "
            f"{'overlay' if count == 1 else 'overlays'} to {args.out}"
        )
    for path in rasters:
        _predict_raster(model, path, out, args, options)


_RASTER_TILE = "512"  # a raster never runs whole


def _check_raster_options(args, rasters):
    raster_only = [
        flag
        for flag, value in (
            ("--bands", args.bands),
            ("--value-range", args.value_range),
            ("--confidence", args.confidence),
            ("--allow-no-crs", args.allow_no_crs),
        )
        if value
    ]
    if raster_only and not rasters:
        raise UserInputError(
            f"{', '.join(raster_only)} apply to rasters (.tif, .vrt, ...); "
            "none of the inputs is one."
        )
    if rasters and args.probabilities:
        raise UserInputError(
            "--probabilities applies to images, not rasters (a raster's "
            "probabilities would not fit in memory); use --confidence."
        )


def _predict_raster(model, path, out, args, options):
    from keras_deeplab.inference.raster import RasterOptions, segment_raster
    from keras_deeplab.inference.tiling import Tiling, parse_tile

    tiling = options["tiling"] or Tiling(
        parse_tile(_RASTER_TILE), overlap=args.overlap, window=args.blend
    )
    print(f"segmenting raster {path} ...", flush=True)
    start = time.perf_counter()
    written = segment_raster(
        model,
        path,
        out,
        tiling,
        options=RasterOptions(
            bands=args.bands,
            value_range=args.value_range,
            allow_no_crs=args.allow_no_crs,
        ),
        scales=options["scales"],
        flip=options["flip"],
        confidence=args.confidence,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(f"wrote {', '.join(map(str, written))} ({seconds:.0f} s)")
