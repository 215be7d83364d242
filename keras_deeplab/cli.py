"""Command line entry point: `keras-deeplab demo|report`."""

import argparse
import os
import sys
from pathlib import Path

# TensorFlow logs a page of C++ start-up lines; keep the CLI readable unless
# the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_EXIT = 2


def _demo(args):
    from keras_deeplab.demo import format_report, model_report, segment_example
    from keras_deeplab.models import DeepLabV3

    print(format_report(model_report(args.num_classes)))
    model = DeepLabV3(args.num_classes)
    path = segment_example(model, out_dir=Path(args.out), size=args.size)
    print(f"wrote {path}")


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-deeplab",
        description="DeepLabV3 semantic segmentation for Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="model report + overlay PNG")
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument("--size", type=int, default=257, help="image size")
    demo.add_argument("--num-classes", type=int, default=21)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Runs the CLI; user errors exit 2 with one line and no traceback."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"keras-deeplab {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
