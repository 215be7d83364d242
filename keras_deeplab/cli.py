"""Command line: `keras-deeplab train|evaluate|predict|export|demo|...`.

One convention everywhere: `--config CONFIG` (a preset name or a YAML/JSON
file) and `--model MODEL` (a .keras file, or .weights.h5 with --config);
`--set key=value` overrides one config value. The spellings of earlier
releases still work: a positional CONFIG, `--weights`, `--data`, and
export's positional MODEL.

User errors (missing file, bad config key or value, bad data) exit with
status 2 and one line on stderr, never a traceback. TensorFlow's C++ logs
are silenced unless `--verbose`.
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from keras_deeplab.errors import UserInputError
from keras_deeplab.native_logs import filtered_stderr

USER_ERROR_EXIT = 2
DATA_PROBLEM_EXIT = 1  # validate-data found problems (and listed them)
_PRESETS_HELP = "preset (demo, voc_aug, cityscapes, ade20k, pets) or YAML/JSON"
_BF16_HELP = (
    "bfloat16: ~1.8x faster on CPUs with AVX512_BF16/AMX, float32 logits"
)


def _config(args, *, required=True):
    from keras_deeplab.config import load_config

    source = args.config or getattr(args, "config_positional", None)
    if source is None and required:
        raise UserInputError(
            f"keras-deeplab {args.command} needs --config CONFIG "
            f"({_PRESETS_HELP})."
        )
    if source is None and not args.set:
        return None
    config = load_config(source, args.set)
    changed = config.differences()
    print(
        "settings: "
        + (", ".join(f"{k}={v!r}" for k, v in changed.items()) or "defaults"),
        flush=True,
    )
    return config


def _output_dir(path, flag="--out") -> Path:
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


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive int (pixels)"
        )
    return value


def _model_path(args):
    path = args.model or getattr(args, "model_positional", None)
    if path is None:
        raise UserInputError(
            f"keras-deeplab {args.command} needs --model MODEL (a .keras "
            "file, or .weights.h5 with --config)."
        )
    return path


def _train(args):
    from keras_deeplab.training.fit import train

    config = _config(args)
    train(
        config,
        _output_dir(args.work_dir, "--work-dir"),
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _evaluate(args):
    from keras_deeplab.data.configured import split_dataset
    from keras_deeplab.loading import load_trained_model
    from keras_deeplab.models import with_precision
    from keras_deeplab.training.evaluate import evaluate_model

    config = _config(args)
    model = with_precision(
        load_trained_model(_model_path(args), config), args.precision
    )
    results = evaluate_model(
        model,
        split_dataset(config, config.val_split, training=False),
        num_classes=config.num_classes,
        scales=config.eval_scales,
        flip=config.eval_flip,
    )
    print(json.dumps(results, indent=2))


def _predict(args):
    from keras_deeplab.loading import load_trained_model
    from keras_deeplab.models import with_precision
    from keras_deeplab.predict import segment_files

    config = _config(args, required=False)
    out = _output_dir(args.out)
    model = with_precision(
        load_trained_model(_model_path(args), config), args.precision
    )
    written = segment_files(
        model, args.images, out, probabilities=args.probabilities
    )
    print(f"wrote {len(written)} masks and overlays to {args.out}")


def _validate_data(args):
    from keras_deeplab.data.validate import validate_data

    reports = validate_data(_config(args))
    for report in reports:
        print(report.format())
    return 0 if all(report.ok for report in reports) else DATA_PROBLEM_EXIT


def _export(args):
    from keras_deeplab.data.configured import calibration_images
    from keras_deeplab.export.artefacts import disk_size_mb, export, export_all
    from keras_deeplab.loading import load_trained_model

    config = _config(args, required=False)
    out = _output_dir(args.out)
    model = load_trained_model(_model_path(args), config)
    size = args.size or (config.export_size if config else None)
    calibrates = args.format == "all" or args.quantize == "int8"
    if calibrates and config is None:
        raise UserInputError(
            f"--format {args.format} --quantize {args.quantize} calibrates "
            "int8 on training images; pass --config CONFIG."
        )
    images = calibration_images(config, size=size) if calibrates else None
    naming = {
        "model_name": config.model_name if config else "deeplab",
        "version": args.version,
        "overwrite": args.overwrite,
    }
    if args.format == "all":
        paths = export_all(
            model, out, size=size, representative_images=images, **naming
        )
    else:
        path = export(
            model,
            args.format,
            out,
            size=size,
            quantize=args.quantize,
            representative_images=images,
            io_type=args.io_type,
            argmax=args.argmax,
            **naming,
        )
        paths = {args.format: path}
    for name, path in paths.items():
        print(f"{name}: {path} ({disk_size_mb(path):.1f} MiB)")


def _verify_export(args):
    from keras_deeplab.data.configured import validation_batch
    from keras_deeplab.export.verify import (
        format_table,
        save_report,
        verify_exports,
    )
    from keras_deeplab.loading import load_trained_model

    config = _config(args)
    model = load_trained_model(_model_path(args), config)
    images, masks = validation_batch(
        config, size=config.export_size, count=args.count
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


def _convert_torchvision(args):
    from keras_deeplab.atomic import atomic_file
    from keras_deeplab.convert import convert_torchvision

    out = Path(args.out)
    if out.suffix != ".keras":
        raise UserInputError(
            f"--out {str(out)!r} must end in .keras (a Keras model file)."
        )
    _output_dir(out.parent)
    model = convert_torchvision(
        args.checkpoint,
        arch=args.arch,
        output_stride=args.output_stride,
        num_classes=args.num_classes,
    )
    with atomic_file(out) as temporary:
        model.save(temporary)
    print(
        f"wrote {out}: {model.name}, {model.count_params():,} parameters"
        + (" (with aux head)" if isinstance(model.output, dict) else "")
    )


def _demo(args):
    from keras_deeplab.demo import run_demo

    run_demo(_output_dir(args.out), overrides=args.set, resume=args.resume)


def _add_config(parser, *, positional=False):
    """--config (alias --data) [+ the old positional CONFIG] and --set."""
    if positional:
        parser.add_argument(
            "config_positional", nargs="?", help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--config", "--data", dest="config", default=None, help=_PRESETS_HELP
    )
    _add_set(parser, help="override one config value; repeatable")


def _add_set(parser, *, help):
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _add_model(parser, *, positional=False):
    """--model (alias --weights) [+ export's old positional MODEL]."""
    if positional:
        parser.add_argument(
            "model_positional", nargs="?", help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--model",
        "--weights",
        dest="model",
        default=None,
        help=".keras model (or .weights.h5 with --config)",
    )


def _add_precision(parser, *, help):
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help=help,
    )


def _add_train(commands):
    train = commands.add_parser("train", help="train with model.fit")
    _add_config(train, positional=True)
    train.add_argument(
        "--work-dir",
        required=True,
        help="checkpoints, logs and config.json go here",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its backup",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in --work-dir",
    )
    train.set_defaults(run=_train)


def _add_evaluate_predict_validate(commands):
    evaluate = commands.add_parser("evaluate", help="mIoU on the val split")
    _add_config(evaluate, positional=True)
    _add_model(evaluate)
    _add_precision(evaluate, help=_BF16_HELP)
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="segment image files")
    predict.add_argument("images", nargs="+", help="JPEG/PNG files")
    _add_model(predict)
    _add_config(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--probabilities",
        action="store_true",
        help="also save float32 probabilities as .npy",
    )
    _add_precision(predict, help=_BF16_HELP)
    predict.set_defaults(run=_predict)

    validate = commands.add_parser(
        "validate-data", help="report problems in a dataset"
    )
    _add_config(validate, positional=True)
    validate.set_defaults(run=_validate_data)


def _add_export(commands):
    export = commands.add_parser("export", help="SavedModel, TFLite, ONNX")
    _add_model(export, positional=True)
    _add_config(export)
    export.add_argument(
        "--format",
        required=True,
        choices=("saved_model", "tflite", "onnx", "all"),
    )
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument(
        "--version", type=int, default=1, help="TF Serving version folder"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace existing artefacts"
    )
    export.add_argument(
        "--quantize",
        default="none",
        choices=("none", "fp16", "dynamic", "int8"),
    )
    export.add_argument(
        "--io-type",
        default="float32",
        choices=("float32", "uint8", "int8"),
        help="input type of an int8 TFLite model",
    )
    export.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help="fixed TFLite input side; omit for dynamic",
    )
    export.add_argument(
        "--argmax", action="store_true", help="TFLite returns uint8 class ids"
    )
    export.set_defaults(run=_export)

    verify = commands.add_parser(
        "verify-export", help="parity table: Keras vs exports"
    )
    verify.add_argument("export_dir", help="folder written by export")
    _add_config(verify)
    _add_model(verify)
    verify.add_argument(
        "--count", type=int, default=16, help="validation images to compare on"
    )
    _add_precision(verify, help="bfloat16: add a Keras bf16 row to the table")
    verify.set_defaults(run=_verify_export)


def _add_convert_and_demo(commands):
    convert = commands.add_parser(
        "convert-torchvision",
        help="torchvision/VainF DeepLabV3(+) checkpoint -> .keras model",
    )
    convert.add_argument(
        "checkpoint", help=".pth state dict (torchvision) or VainF checkpoint"
    )
    convert.add_argument(
        "--arch",
        required=True,
        # convert.ARCHS (not imported here: --help stays fast).
        choices=(
            "deeplabv3_resnet50",
            "deeplabv3_resnet101",
            "deeplabv3plus_resnet50",
            "deeplabv3plus_resnet101",
        ),
    )
    convert.add_argument(
        "--output-stride",
        type=int,
        default=8,
        choices=(8, 16),
        help="8 (torchvision's) or 16 (VainF's training stride); default 8",
    )
    convert.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="check the classifier has this many classes",
    )
    convert.add_argument("--out", required=True, help="MODEL.keras to write")
    convert.set_defaults(run=_convert_torchvision)

    demo = commands.add_parser(
        "demo", help="train on synthetic data, evaluate, export, verify"
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument(
        "--resume", action="store_true", help="continue an interrupted demo run"
    )
    _add_set(demo, help="override one value of the demo preset; repeatable")
    demo.set_defaults(run=_demo)


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-deeplab",
        description="DeepLabV3 semantic segmentation for Keras 3.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ INFO and WARNING logs",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_evaluate_predict_validate(commands)
    _add_export(commands)
    _add_convert_and_demo(commands)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    quiet = contextlib.nullcontext() if args.verbose else filtered_stderr()
    with quiet:
        return _run(args)


def _pipeline_message(err) -> str:
    """The one line of a tf.data check failure that the user needs."""
    from keras_deeplab.data.pipeline import DATA_ERROR_MARK

    for line in err.message.splitlines():
        if DATA_ERROR_MARK in line:
            message = line.split(DATA_ERROR_MARK, 1)[1]
            return message.rstrip("] ").strip()
    return err.message.strip().splitlines()[0]


def _run(args):
    # Imported here so `--help` answers without loading TensorFlow.
    from tensorflow.errors import InvalidArgumentError

    try:
        status = args.run(args) or 0
    except (UserInputError, FileNotFoundError, FileExistsError) as err:
        print(f"keras-deeplab {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except InvalidArgumentError as err:
        # Raised from inside tf.data by the file, size and label checks.
        print(
            f"keras-deeplab {args.command}: error: {_pipeline_message(err)}",
            file=sys.stderr,
        )
        return USER_ERROR_EXIT
    return status


if __name__ == "__main__":
    sys.exit(main())
