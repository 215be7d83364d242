"""Command line: `keras-deeplab train|evaluate|predict|export|demo|...`.

User errors (missing file, bad config key or value, bad data) exit with
status 2 and one line on stderr, never a traceback.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from keras_deeplab.atomic import atomic_file
from keras_deeplab.benchmark.command import (
    add_parser as add_benchmark_parser,
)
from keras_deeplab.errors import UserInputError

# TensorFlow logs a page of C++ start-up lines; keep the CLI readable unless
# the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_EXIT = 2
DATA_PROBLEM_EXIT = 1  # validate-data found problems (and listed them)


def _config(args, source=None):
    from keras_deeplab.config import load_config

    config = load_config(source or args.config, args.set)
    print(f"resolved config:\n{config.to_json()}", flush=True)
    return config


def _train(args):
    from keras_deeplab.training.fit import train

    train(_config(args), args.work_dir, resume=args.resume)


def _evaluate(args):
    from keras_deeplab.data.pipeline import make_dataset
    from keras_deeplab.models import load_trained_model
    from keras_deeplab.training.evaluate import evaluate_model

    config = _config(args)
    model = load_trained_model(args.weights, config)
    results = evaluate_model(
        model,
        make_dataset(config, config.val_split, training=False),
        num_classes=config.num_classes,
        scales=config.eval_scales,
        flip=config.eval_flip,
    )
    print(json.dumps(results, indent=2))


def _predict(args):
    from keras_deeplab.models import load_trained_model
    from keras_deeplab.predict import segment_files

    config = _config(args) if args.config else None
    model = load_trained_model(args.weights, config)
    written = segment_files(
        model, args.images, args.out, probabilities=args.probabilities
    )
    print(f"wrote {len(written)} masks and overlays to {args.out}")


def _validate_data(args):
    from keras_deeplab.data.validate import validate_data

    reports = validate_data(_config(args))
    for report in reports:
        print(report.format())
    return 0 if all(report.ok for report in reports) else DATA_PROBLEM_EXIT


def _export(args):
    from keras_deeplab.export import parity
    from keras_deeplab.export.onnx import export_onnx
    from keras_deeplab.export.saved_model import export_saved_model
    from keras_deeplab.export.tflite import convert_tflite
    from keras_deeplab.models import load_trained_model

    config = _config(args, args.data) if args.data else None
    model = load_trained_model(args.model, config)
    size = args.size or (config.export_size if config else None)
    needs_data = args.format == "all" or args.quantize == "int8"
    if needs_data and config is None:
        raise UserInputError(
            f"--format {args.format} --quantize {args.quantize} calibrates "
            "int8 on training images; pass --data CONFIG."
        )
    images = (
        parity.representative_images(config, size=size)
        if (needs_data)
        else None
    )
    out = Path(args.out)
    if args.format == "all":
        paths = parity.export_all(
            model,
            out,
            size=size,
            representative_images=images,
            version=args.version,
            overwrite=args.overwrite,
            model_name=config.model_name,
        )
    elif args.format == "saved_model":
        paths = {
            "saved_model": export_saved_model(
                model,
                out,
                version=args.version,
                overwrite=args.overwrite,
                model_name=config.model_name if config else "deeplab",
            )
        }
    elif args.format == "onnx":
        paths = {"onnx": export_onnx(model, out / "onnx" / "deeplab.onnx")}
    else:
        data = convert_tflite(
            model,
            size=size,
            quantize=args.quantize,
            representative_images=images,
            io_type=args.io_type,
            argmax=args.argmax,
        )
        path = out / "tflite" / parity.tflite_name(args.quantize, size)
        with atomic_file(path) as temporary:
            temporary.write_bytes(data)
        paths = {"tflite": path}
    for name, path in paths.items():
        print(f"{name}: {path} ({parity.disk_size_mb(path):.1f} MB)")


def _verify_export(args):
    from keras_deeplab.export import parity
    from keras_deeplab.models import load_trained_model

    config = _config(args)
    model = load_trained_model(args.weights, config)
    images, masks = parity.verification_batch(
        config, size=config.export_size, count=args.count
    )
    rows = parity.verify_exports(
        model, args.export_dir, images, masks, num_classes=config.num_classes
    )
    print(parity.format_table(rows))
    print(f"wrote {parity.save_report(rows, args.export_dir)}")


def _convert_torchvision(args):
    from keras_deeplab.convert import convert_torchvision

    out = Path(args.out)
    if out.suffix != ".keras":
        raise UserInputError(
            f"--out {str(out)!r} must end in .keras (a Keras model file)."
        )
    model = convert_torchvision(
        args.checkpoint,
        arch=args.arch,
        output_stride=args.output_stride,
        num_classes=args.num_classes,
    )
    with atomic_file(out) as temporary:
        model.save(temporary)
    print(
        f"wrote {out}: {model.name}, {model.output_shape!s} logits, "
        f"{model.count_params():,} parameters"
    )


def _demo(args):
    from keras_deeplab.demo import run_demo

    run_demo(args.out, overrides=args.set, resume=args.resume)


def _add_config_args(parser, *, required=True):
    parser.add_argument(
        "config",
        nargs=None if required else "?",
        help="preset name (demo, voc_aug, cityscapes, ade20k, pets) or a "
        "YAML/JSON config file",
    )
    _add_set(parser)


def _add_set(parser):
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value; repeatable",
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-deeplab",
        description="DeepLabV3 semantic segmentation for Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train with model.fit")
    _add_config_args(train)
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
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="mIoU on the val split")
    _add_config_args(evaluate)
    evaluate.add_argument(
        "--weights", required=True, help=".keras model or .weights.h5 file"
    )
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="segment image files")
    predict.add_argument(
        "--weights",
        required=True,
        help=".keras model (or .weights.h5 with --config)",
    )
    predict.add_argument("images", nargs="+", help="JPEG/PNG files")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--config", default=None, help="config for a .weights.h5 file"
    )
    predict.add_argument(
        "--probabilities",
        action="store_true",
        help="also save float32 probabilities as .npy",
    )
    _add_set(predict)
    predict.set_defaults(run=_predict)

    validate = commands.add_parser(
        "validate-data", help="report problems in a dataset"
    )
    _add_config_args(validate)
    validate.set_defaults(run=_validate_data)

    export = commands.add_parser("export", help="SavedModel, TFLite, ONNX")
    export.add_argument(
        "model", help=".keras model (or .weights.h5 with --data)"
    )
    export.add_argument(
        "--format",
        required=True,
        choices=("saved_model", "tflite", "onnx", "all"),
    )
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument(
        "--data",
        default=None,
        metavar="CONFIG",
        help="config whose training data calibrates int8",
    )
    export.add_argument(
        "--version", type=int, default=1, help="TF Serving version folder"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing version"
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
        type=int,
        default=None,
        help="fixed TFLite input side; omit for dynamic",
    )
    export.add_argument(
        "--argmax", action="store_true", help="TFLite returns uint8 class ids"
    )
    _add_set(export)
    export.set_defaults(run=_export, config=None)

    verify = commands.add_parser(
        "verify-export", help="parity table: Keras vs exports"
    )
    verify.add_argument("export_dir", help="folder written by export")
    verify.add_argument(
        "--data",
        required=True,
        metavar="CONFIG",
        dest="config",
        help="config of the validation data",
    )
    verify.add_argument("--weights", required=True, help=".keras model")
    verify.add_argument(
        "--count", type=int, default=16, help="validation images to compare on"
    )
    _add_set(verify)
    verify.set_defaults(run=_verify_export)

    convert = commands.add_parser(
        "convert-torchvision",
        help="torchvision/VainF DeepLabV3 checkpoint -> .keras model",
    )
    convert.add_argument(
        "checkpoint", help=".pth state dict (torchvision) or VainF checkpoint"
    )
    convert.add_argument(
        "--arch",
        required=True,
        choices=("deeplabv3_resnet50", "deeplabv3_resnet101"),
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
        "demo", help="train on synthetic data, evaluate, write pictures"
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument(
        "--resume", action="store_true", help="continue an interrupted demo run"
    )
    _add_set(demo)
    demo.set_defaults(run=_demo)
    add_benchmark_parser(commands)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    # Imported here so `--help` answers without loading TensorFlow.
    from tensorflow.errors import InvalidArgumentError

    try:
        status = args.run(args) or 0
    except (UserInputError, FileNotFoundError, FileExistsError) as err:
        print(f"keras-deeplab {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except InvalidArgumentError as err:
        # Raised from inside tf.data by the label and size checks.
        print(
            f"keras-deeplab {args.command}: error: "
            f"{err.message.splitlines()[0]}",
            file=sys.stderr,
        )
        return USER_ERROR_EXIT
    return status


if __name__ == "__main__":
    sys.exit(main())
