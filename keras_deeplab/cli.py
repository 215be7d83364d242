"""Command line: `keras-deeplab train|evaluate|predict|validate-data|demo`.

User errors (missing file, bad config key or value, bad data) exit with
status 2 and one line on stderr, never a traceback.
"""

import argparse
import json
import os
import sys

# TensorFlow logs a page of C++ start-up lines; keep the CLI readable unless
# the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_EXIT = 2
DATA_PROBLEM_EXIT = 1  # validate-data found problems (and listed them)


def _config(args):
    from keras_deeplab.config import load_config

    config = load_config(args.config, args.set)
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

    demo = commands.add_parser(
        "demo", help="train on synthetic data, evaluate, write pictures"
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument(
        "--resume", action="store_true", help="continue an interrupted demo run"
    )
    _add_set(demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    # Imported here so `--help` answers without loading TensorFlow.
    from tensorflow.errors import InvalidArgumentError

    from keras_deeplab.errors import UserInputError

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
