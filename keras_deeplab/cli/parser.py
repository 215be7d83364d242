"""The command line's argument parser; Keras-free, so `--help` is instant.

One convention everywhere: `--config CONFIG` (a preset name or a YAML/JSON
file) and `--model MODEL` (a .keras file, a preset name, or .weights.h5 with
--config); `--set key=value` overrides one config value. The spellings of
releases <= 0.2 are still accepted (a positional CONFIG, `--weights`,
`--data`, export's positional MODEL, `--quantize none|dynamic`) but no
longer documented.
"""

import argparse

from keras_deeplab.cli import arguments
from keras_deeplab.config import PRESETS
from keras_deeplab.convert.archs import ARCHS
from keras_deeplab.export.layout import (
    FORMATS,
    IO_TYPES,
    LEGACY_QUANTIZE,
    TFLITE_PRECISIONS,
)
from keras_deeplab.spec import INFERENCE_PRECISIONS, OUTPUT_STRIDES

PRESETS_HELP = f"config preset ({', '.join(PRESETS)}) or YAML/JSON file"
MODEL_HELP = (
    ".keras file, preset name (keras-deeplab presets) or .weights.h5 with "
    "--config"
)
_BF16_HELP = "bfloat16: faster on CPUs with AVX512_BF16/AMX; float32 logits"


def _add_config(parser, *, positional=False):
    """--config (alias --data) [+ the old positional CONFIG] and --set."""
    if positional:
        parser.add_argument(
            "config_positional", nargs="?", help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--config", "--data", dest="config", default=None, help=PRESETS_HELP
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
        "--model", "--weights", dest="model", default=None, help=MODEL_HELP
    )


def _add_precision(parser, *, help):
    parser.add_argument(
        "--precision",
        default="float32",
        choices=INFERENCE_PRECISIONS,
        help=help,
    )


def _add_inference(parser):
    """Multi-scale and flipped inference (overrides the config's)."""
    parser.add_argument(
        "--scales",
        type=arguments.scales,
        default=None,
        help="input scales to average, e.g. 0.75,1,1.25 (default: config's "
        "eval_scales, or 1)",
    )
    parser.add_argument(
        "--flip",
        action="store_true",
        default=None,
        help="also average left-right flipped inference",
    )
    parser.add_argument(
        "--tile",
        metavar="H[xW]",
        help="sliding-window inference in tiles of this size (pixels), for "
        "images too large to run whole",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="with --tile: fraction of a tile the next one overlaps "
        "(default 0.25)",
    )
    parser.add_argument(
        "--blend",
        choices=("mean", "gaussian"),
        default="mean",
        help="with --tile: how overlapping tiles are averaged",
    )


def _add_raster(parser):
    """Options that apply to rasters (docs/rasters.md)."""
    parser.add_argument(
        "--bands",
        type=arguments.band_list,
        default=None,
        help="rasters: the bands that make RGB, 1-based (default 1,2,3)",
    )
    parser.add_argument(
        "--value-range",
        metavar="LOW,HIGH",
        type=arguments.value_range,
        default=None,
        help="rasters: values mapped to 0 and 255 (default: 8-bit bands as "
        "they are, others from their 2nd to 98th percentile)",
    )
    parser.add_argument(
        "--allow-no-crs",
        action="store_true",
        help="rasters: segment one without a CRS (pixel coordinates only)",
    )


def _add_engine(parser):
    """Where `predict` runs (docs/scale.md)."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process (default); beam: Apache Beam (DirectRunner "
        "here, Dataflow/Flink/Spark with --engine-option runner=...); ray: "
        "Ray Data. beam and ray write <stem>_mask.png under the inputs' "
        "folders, manifest.jsonl and failed.jsonl, and skip done inputs",
    )
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=arguments.key_value,
        help="passed to the engine: Beam pipeline options (runner=, "
        "project=, direct_num_workers=, ...), Ray's address=, num_cpus=, "
        "workers=, batch_size=",
    )
    parser.add_argument(
        "--max-pixels",
        type=arguments.positive_int,
        default=None,
        help="beam, ray: larger images go to failed.jsonl unless --tile is "
        "given (default 4096x4096)",
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


ENGINES = ("local", "beam", "ray")


def _add_evaluate_predict_validate(commands):
    evaluate = commands.add_parser("evaluate", help="mIoU on the val split")
    _add_config(evaluate, positional=True)
    _add_model(evaluate)
    _add_precision(evaluate, help=_BF16_HELP)
    _add_inference(evaluate)
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        help="also write report.json, per_class.csv and confusion_matrix.png",
    )
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report of an earlier run in --report",
    )

    predict = commands.add_parser(
        "predict", help="segment image files and rasters (GeoTIFF)"
    )
    predict.add_argument(
        "images",
        nargs="+",
        help="JPEG/PNG files or patterns ('imgs/**/*.jpg'; gs://, s3:// "
        "with --engine beam), or rasters (.tif, .vrt, ...: streamed in "
        "tiles, georeferencing kept; needs the geo extra)",
    )
    _add_model(predict)
    _add_config(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--probabilities",
        action="store_true",
        help="also save float32 probabilities as .npy",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs of an earlier run in --out",
    )
    predict.add_argument(
        "--confidence",
        action="store_true",
        help="also write <stem>_confidence.png (.tif for rasters): the top "
        "class probability x 255, uint8, uncalibrated",
    )
    _add_engine(predict)
    _add_precision(predict, help=_BF16_HELP)
    _add_inference(predict)
    _add_raster(predict)

    validate = commands.add_parser(
        "validate-data", help="report problems in a dataset"
    )
    _add_config(validate, positional=True)


def _add_export(commands):
    export = commands.add_parser(
        "export", help="SavedModel, TFLite, ONNX, OpenVINO"
    )
    _add_model(export, positional=True)
    _add_config(export)
    export.add_argument("--format", required=True, choices=(*FORMATS, "all"))
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument(
        "--version",
        type=arguments.version_number,
        default=1,
        help="TF Serving version folder (a positive int)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace existing artefacts"
    )
    export.add_argument(
        "--quantize",
        default="fp32",
        choices=(*TFLITE_PRECISIONS, *LEGACY_QUANTIZE),
        help="TFLite: fp32, fp16, drq_int8 (int8 weights) or int8 (full "
        "integer); ONNX: fp32 or int8",
    )
    export.add_argument(
        "--io-type",
        default="float32",
        choices=IO_TYPES,
        help="input type of an int8 TFLite model",
    )
    export.add_argument(
        "--size",
        metavar="H[xW]",
        default=None,
        help="fixed TFLite input size: a side (513) or height x width "
        "(512x1024); default: the config's export_size with --config, any "
        "size without",
    )
    export.add_argument(
        "--argmax", action="store_true", help="TFLite returns uint8 class ids"
    )
    export.add_argument(
        "--probabilities",
        action="store_true",
        help="SavedModel: serving_default also returns float32 class "
        "probabilities (B, H, W, C); by default only uint8 class_ids",
    )

    verify = commands.add_parser(
        "verify-export", help="parity table: Keras vs exports"
    )
    verify.add_argument("export_dir", help="folder written by export")
    _add_config(verify)
    _add_model(verify)
    verify.add_argument(
        "--count",
        type=arguments.positive_int,
        default=16,
        help="validation images to compare on",
    )
    verify.add_argument(
        "--size",
        metavar="H[xW]",
        default=None,
        help="size of the compared images (padded or center-cropped, never "
        "resized), as the fixed-size TFLite files were exported; default: "
        "the config's export_size",
    )
    _add_precision(verify, help="bfloat16: add a Keras bf16 row to the table")


def _add_convert_presets_demo(commands):
    convert = commands.add_parser(
        "convert-torchvision",
        help="torchvision/VainF checkpoint -> .keras model (no PyTorch)",
    )
    convert.add_argument(
        "checkpoint", help=".pth state dict (torchvision) or VainF checkpoint"
    )
    convert.add_argument("--arch", required=True, choices=tuple(ARCHS))
    convert.add_argument(
        "--output-stride",
        type=int,
        default=None,
        choices=OUTPUT_STRIDES,
        help="default: the checkpoint's own (8 for torchvision's ResNets, 16 "
        "for its MobileNets and for VainF's)",
    )
    convert.add_argument(
        "--num-classes",
        type=arguments.positive_int,
        default=None,
        help="check the classifier has this many classes",
    )
    convert.add_argument(
        "--class-names",
        metavar="FILE|PRESET",
        default=None,
        help="what the classes are: a UTF-8 file with one name per line, or "
        "a preset whose names the checkpoint shares (e.g. "
        "deeplabv3_resnet50_coco); default class_0, class_1, ...",
    )
    convert.add_argument("--out", required=True, help="MODEL.keras to write")

    commands.add_parser(
        "presets", help="list the pretrained models from_preset downloads"
    )

    demo = commands.add_parser(
        "demo", help="train on synthetic data, evaluate, export, verify"
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument(
        "--config",
        default="demo",
        choices=("demo", "mobile"),
        help="demo: DeepLabV3 on a quarter-width ResNet-50; mobile: LR-ASPP "
        "on MobileNetV3-Large (default demo)",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted demo run: its training, or the steps "
        "after a finished training",
    )
    _add_set(demo, help="override one value of the demo preset; repeatable")


def build_parser() -> argparse.ArgumentParser:
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
    _add_convert_presets_demo(commands)
    return parser
