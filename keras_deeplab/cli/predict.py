"""`keras-deeplab predict`: image files (a mask PNG and a picture each),
rasters (streamed, georeferenced; `inference.raster`), and jobs on Beam or
Ray (`inference.engines`)."""

import time

from keras_deeplab.cli.commands import (
    inference_options,
    model_from_args,
    output_dir,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import counted


def predict(args, *, config):
    """Segments the image files and rasters `args.images` names (files or
    patterns); returns the exit status."""
    from keras_deeplab.inference.raster import is_raster

    if args.engine != "local":
        return _predict_on_engine(args, config)
    if args.engine_option or args.max_pixels:
        raise UserInputError(
            "--engine-option and --max-pixels apply to --engine beam and "
            "ray; this run is local."
        )
    inputs = _local_files(args.images)
    out = output_dir(args.out)
    rasters = [path for path in inputs if is_raster(path)]
    images = [path for path in inputs if not is_raster(path)]
    _check_raster_options(args, rasters)
    model = model_from_args(args, config, precision=args.precision)
    options = inference_options(args, config)
    if images:
        from keras_deeplab.inference.predict import segment_files

        written = segment_files(
            model,
            images,
            out,
            probabilities=args.probabilities,
            overwrite=args.overwrite,
            confidence=args.confidence,
            **options,
        )
        count = len(written)
        print(
            f"wrote {counted(count, 'mask')} and "
            f"{counted(count, 'overlay')} to {args.out}"
        )
    for path in rasters:
        _predict_raster(model, path, out, args, options)


_RASTER_TILE = "512"  # a raster never runs whole


def _local_files(arguments) -> list:
    """Files and the matches of patterns ('imgs/**/*.jpg'), in order."""
    from keras_deeplab.inference.jobs import LocalFiles, files_of, has_scheme

    remote = [argument for argument in arguments if has_scheme(argument)]
    if remote:
        raise UserInputError(
            f"{remote[0]!r} is on an object store; the local engine reads "
            "local files: use --engine beam."
        )
    return [path for a in arguments for path in files_of(a, LocalFiles())]


def _predict_on_engine(args, config):
    """`--engine beam|ray`: a job whose outputs survive retries and reruns
    (`inference.jobs`); exit status 1 if any input failed."""
    from keras_deeplab.cli.commands import DATA_PROBLEM_EXIT
    from keras_deeplab.inference import jobs
    from keras_deeplab.inference.batch import (
        DEFAULT_MAX_PIXELS,
        InferenceOptions,
    )
    from keras_deeplab.inference.raster import is_raster

    refused = ["--probabilities"] if args.probabilities else []
    refused += _raster_flags(args)
    rasters = [path for path in args.images if is_raster(path)]
    if refused or rasters:
        raise UserInputError(
            f"{', '.join(refused) or repr(rasters[0])}: "
            f"--engine {args.engine} segments JPEG/PNG images into PNG masks "
            "(float probabilities would be what the engines must not hold "
            "in flight; rasters stream on one machine): use --engine local."
        )
    out = args.out if jobs.has_scheme(args.out) else str(output_dir(args.out))
    arguments = [jobs.absolute(argument) for argument in args.images]
    settings = jobs.JobSettings(
        model=_engine_model(args),
        out=jobs.absolute(out),
        root=jobs.job_root(arguments),
        options=InferenceOptions(
            **inference_options(args, config),
            confidence=args.confidence,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        ),
        config=config,
        precision=args.precision,
        overwrite=args.overwrite,
    )
    engine_options = dict(args.engine_option)
    print(f"segmenting on {args.engine} ...", flush=True)
    if args.engine == "beam":
        from keras_deeplab.inference.engines.beam import segment_with_beam

        summary = segment_with_beam(arguments, settings, engine_options)
    else:
        from keras_deeplab.inference.engines.ray import segment_with_ray

        summary = segment_with_ray(arguments, settings, engine_options)
    print(f"{summary.line}; manifest in {args.out}")
    return DATA_PROBLEM_EXIT if summary.failed else 0


def _engine_model(args) -> str:
    """The model as workers load it: a SavedModel folder, or what
    `load_trained_model` takes, checked here so a typo fails before any
    worker starts."""
    from keras_deeplab.cli.commands import model_source
    from keras_deeplab.inference.jobs import absolute, is_saved_model
    from keras_deeplab.loading import check_model_source

    source = model_source(args)
    if is_saved_model(source):
        return absolute(source)
    return check_model_source(source)


def _raster_flags(args) -> list:
    """The raster-only flags this command line sets."""
    return [
        flag
        for flag, value in (
            ("--bands", args.bands),
            ("--value-range", args.value_range),
            ("--allow-no-crs", args.allow_no_crs),
        )
        if value
    ]


def _check_raster_options(args, rasters):
    raster_only = _raster_flags(args)
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
