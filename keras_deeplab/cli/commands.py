"""What each `keras-deeplab` command does, given its parsed arguments.

Each command imports what it needs when it runs, so building the parser
(and `--help`) never loads TensorFlow.
"""

import os
from pathlib import Path

from keras_deeplab.utils.errors import UserInputError, read_text_file

DATA_PROBLEM_EXIT = 1  # validate-data found problems (and listed them)


def _config(args, *, required=True):
    from keras_deeplab.cli.parser import PRESETS_HELP
    from keras_deeplab.config import load_config

    source = args.config or getattr(args, "config_positional", None)
    if source is None and required:
        raise UserInputError(
            f"keras-deeplab {args.command} needs --config CONFIG "
            f"({PRESETS_HELP})."
        )
    if source is None and not args.set:
        return None
    config = load_config(source, args.set)
    shown = config.shown_differences()
    print(
        "settings: "
        + (", ".join(f"{k}={v!r}" for k, v in shown.items()) or "defaults"),
        flush=True,
    )
    return config


def output_dir(path, flag="--out") -> Path:
    """`path` as a folder that exists and is writable, or one clear line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(
            f"{flag} {str(path)!r} is a file; expected a folder (it is "
            "created if missing)."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(
            f"{flag} {str(path)!r} cannot be created ({err.strerror}); "
            "choose a writable folder."
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{flag} {str(path)!r} is not writable; choose another folder."
        )
    return path


def model_source(args):
    source = args.model or getattr(args, "model_positional", None)
    if source is None:
        from keras_deeplab.cli.parser import MODEL_HELP

        raise UserInputError(
            f"keras-deeplab {args.command} needs --model MODEL ({MODEL_HELP})."
        )
    return source


def model_from_args(args, config, *, precision="float32"):
    from keras_deeplab.loading import load_trained_model
    from keras_deeplab.models.derived import with_precision

    model = load_trained_model(model_source(args), config)
    return with_precision(model, precision)


def inference_options(args, config):
    """{scales, flip, tiling}: the flags, else the config's eval settings."""
    scales = args.scales or (config.eval_scales if config else (1.0,))
    flip = args.flip
    if flip is None:
        flip = bool(config and config.eval_flip)
    tiling = None
    if args.tile:
        from keras_deeplab.inference.tiling import Tiling, parse_tile

        tiling = Tiling(
            parse_tile(args.tile), overlap=args.overlap, window=args.blend
        )
    return {"scales": scales, "flip": flip, "tiling": tiling}


def train(args):
    from keras_deeplab.training.fit import train as train_model

    train_model(
        _config(args),
        output_dir(args.work_dir, "--work-dir"),
        resume=args.resume,
        overwrite=args.overwrite,
    )


def evaluate(args):
    from keras_deeplab.data.configured import split_dataset, split_size
    from keras_deeplab.evaluation.evaluate import evaluate_model, format_results

    config = _config(args)
    # Checked before the evaluation, which may take hours.
    report_dir = args.report and output_dir(args.report, "--report")
    if report_dir:
        from keras_deeplab.evaluation.report import check_report_dir

        check_report_dir(report_dir, overwrite=args.overwrite)
    model = model_from_args(args, config, precision=args.precision)
    results = evaluate_model(
        model,
        split_dataset(config, config.val_split, training=False),
        num_classes=config.num_classes,
        **inference_options(args, config),
        steps=-(-split_size(config, config.val_split) // config.batch_size),
    )
    print(format_results(results))
    if report_dir:
        from keras_deeplab.evaluation.report import write_report

        for path in write_report(results, report_dir):
            print(f"wrote {path}")


def validate_data(args):
    from keras_deeplab.data.validate import validate_data as validate

    reports = validate(_config(args))
    for report in reports:
        print(report.format())
    return 0 if all(report.ok for report in reports) else DATA_PROBLEM_EXIT


def _export_size(args, config):
    """`--size` as (height, width), else the config's export_size (None
    without a config: any size)."""
    from keras_deeplab.utils.image_size import MAX_IMAGE_SIDE, parse_size

    if args.size:
        return parse_size(args.size, option="--size", maximum=MAX_IMAGE_SIDE)
    return config.export_size if config else None


def export(args):
    import time

    from keras_deeplab.data.configured import calibration_images
    from keras_deeplab.export.artefacts import disk_size_mb
    from keras_deeplab.export.artefacts import export as export_one
    from keras_deeplab.export.export_all import export_all

    config = _config(args, required=False)
    out = output_dir(args.out)
    size = _export_size(args, config)
    calibrates = args.format == "all" or args.quantize == "int8"
    if calibrates and config is None:
        raise UserInputError(
            f"--format {args.format} --quantize {args.quantize} calibrates "
            "int8 on training images; pass --config CONFIG."
        )
    model = model_from_args(args, config)
    images = calibration_images(config, size=size) if calibrates else None
    options = {
        "model_name": config.model_name if config else "deeplab",
        "version": args.version,
        "overwrite": args.overwrite,
        "probabilities": args.probabilities,
    }
    if args.format == "all":  # export_all logs each artefact as it goes
        paths = export_all(
            model,
            out,
            size=size,
            representative_images=images,
            log=lambda line: print(line, flush=True),
            **options,
        )
        total = sum(disk_size_mb(path) for path in paths.values())
        print(f"wrote {len(paths)} artefacts to {out} ({total:.1f} MiB)")
        return
    print(f"writing {args.format} ...", flush=True)
    start = time.perf_counter()
    path = export_one(
        model,
        args.format,
        out,
        size=size,
        quantize=args.quantize,
        representative_images=images,
        io_type=args.io_type,
        argmax=args.argmax,
        **options,
    )
    print(
        f"wrote {path} ({disk_size_mb(path):.1f} MiB, "
        f"{time.perf_counter() - start:.0f} s)"
    )


def verify_export(args):
    from keras_deeplab.data.configured import validation_batch
    from keras_deeplab.export.verify import (
        format_table,
        save_report,
        verify_exports,
    )

    config = _config(args)
    model = model_from_args(args, config)
    images, masks = validation_batch(
        config, size=_export_size(args, config), count=args.count
    )
    rows = verify_exports(
        model,
        args.export_dir,
        images,
        masks,
        num_classes=config.num_classes,
        precisions=() if args.precision == "float32" else (args.precision,),
    )
    print(format_table(rows))
    print(f"wrote {save_report(rows, args.export_dir)}")


def _class_names(source):
    """--class-names: a preset's names, or one name per line of a file."""
    from keras_deeplab.pretrained import MODEL_PRESETS

    if source is None:
        return None
    if source in MODEL_PRESETS and not Path(source).exists():
        return MODEL_PRESETS[source].class_names
    if not Path(source).is_file():
        raise UserInputError(
            f"--class-names {source!r} is neither a file nor a preset name; "
            "expected a UTF-8 file with one class name per line, or a preset "
            "(keras-deeplab presets)."
        )
    lines = read_text_file(source, what="--class-names file").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def convert_torchvision(args):
    from keras_deeplab.convert.torchvision import (
        convert_torchvision as convert,
    )
    from keras_deeplab.utils.atomic import atomic_file

    out = Path(args.out)
    if out.suffix != ".keras" or out.is_dir():
        raise UserInputError(
            f"--out {str(out)!r} must be a .keras file path (not a folder), "
            "e.g. --out deeplabv3_resnet50.keras."
        )
    output_dir(out.parent)
    model = convert(
        args.checkpoint,
        arch=args.arch,
        output_stride=args.output_stride,
        num_classes=args.num_classes,
        class_names=_class_names(args.class_names),
    )
    with atomic_file(out) as temporary:
        model.save(temporary)
    print(
        f"wrote {out}: {model.name}, {model.count_params():,} parameters"
        + (" (with aux head)" if isinstance(model.output, dict) else "")
    )


def presets(args):
    from keras_deeplab.pretrained import cache_dir, preset_rows

    del args
    rows = [
        (
            row["name"],
            row["arch"],
            str(row["classes"]),
            "?" if row["size_mb"] is None else f"{row['size_mb']:.0f}",
            "yes" if row["cached"] else "no",
            row["metric"],
        )
        for row in preset_rows()
    ]
    header = ("name", "arch", "classes", "MB", "cached", "published result")
    # Each column as wide as its widest cell (the MobileNetV3 names are
    # longer than any fixed width chosen for the ResNets).
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(5)]
    right = (False, False, True, True, False)
    for row in (header, *rows):
        cells = [
            f"{cell:>{width}}" if align else f"{cell:<{width}}"
            for cell, width, align in zip(row, widths, right, strict=False)
        ]
        print("  ".join([*cells, row[5]]))
    print(f"cache: {cache_dir()}")


def demo(args):
    from keras_deeplab.cli.demo import run_demo

    run_demo(
        output_dir(args.out),
        preset=args.config,
        overrides=args.set,
        resume=args.resume,
    )


def predict(args):
    from keras_deeplab.cli.predict import predict as run_predict

    return run_predict(args, config=_config(args, required=False))


COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "validate-data": validate_data,
    "export": export,
    "verify-export": verify_export,
    "convert-torchvision": convert_torchvision,
    "presets": presets,
    "demo": demo,
}
