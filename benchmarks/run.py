"""`python -m benchmarks.run`: arguments, run, report and --compare.

Run from a clone of the repository (the harness is not installed with the
library): `python -m benchmarks.run --out benchmarks/results/my-machine`.
Exit status: 0, 1 when a measurement failed or --compare found a
regression, 2 with one line on stderr for bad arguments.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from benchmarks.measure import RUNTIMES
from benchmarks.report import (
    DEFAULT_THRESHOLD,
    compare,
    format_comparison,
    write_report,
)
from benchmarks.results import RESULTS_FILE
from benchmarks.suite import (
    FIT_MODES,
    FIT_PRECISIONS,
    BenchmarkPlan,
    run_benchmark,
)
from keras_deeplab.spec import (
    ARCHITECTURES,
    BACKBONES,
    OUTPUT_STRIDES,
    VARIANTS,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import parse_size, size_text

REGRESSION_EXIT = 1
USER_ERROR_EXIT = 2
_DEFAULTS = BenchmarkPlan()


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measures every runtime in its own process; writes "
        "results.json, results.md and latency.png to --out.",
    )
    parser.add_argument("--out", required=True, help="results folder")
    lists = {
        "--batch": ("batches", int, None),
        "--output-stride": ("output_strides", int, OUTPUT_STRIDES),
        "--backbone": ("backbones", str, tuple(BACKBONES)),
        "--runtime": ("runtimes", str, RUNTIMES),
        "--fit-mode": ("fit_modes", str, (*FIT_MODES, "none")),
        "--fit-precision": ("fit_precisions", str, FIT_PRECISIONS),
    }
    for flag, (field, kind, choices) in lists.items():
        parser.add_argument(
            flag,
            dest=field,
            nargs="+",
            type=kind,
            choices=choices,
            default=getattr(_DEFAULTS, field),
            help=f"default: {' '.join(map(str, getattr(_DEFAULTS, field)))}",
        )
    parser.add_argument(
        "--variant",
        default=_DEFAULTS.variant,
        choices=VARIANTS,
        help=f"our model's layout (default: {_DEFAULTS.variant}, the peers')",
    )
    parser.add_argument(
        "--architecture",
        default=_DEFAULTS.architecture,
        choices=ARCHITECTURES,
        help="our model (default: deeplabv3; the torchvision peers are V3)",
    )
    parser.add_argument(
        "--size",
        metavar="H[xW]",
        default=str(_DEFAULTS.size),
        help=f"input side, or height x width, e.g. 512x1024 (default: "
        f"{_DEFAULTS.size})",
    )
    for field in ("repeats", "warmup", "threads", "backbone_width"):
        _add_int(parser, field)
    for field in ("head_filters", "fit_size", "fit_batch", "fit_steps"):
        _add_int(parser, field)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the measurements already in --out and add the rest",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite results.md and latency.png from results.json",
    )
    parser.add_argument(
        "--compare",
        metavar="BASELINE_JSON",
        default=None,
        help="exit 1 if any measurement is slower than in this results.json",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="slowdown that counts as a regression (default: 0.10)",
    )
    return parser


def _add_int(parser, field):
    parser.add_argument(
        "--" + field.replace("_", "-"),
        dest=field,
        type=int,
        default=getattr(_DEFAULTS, field),
        help=f"default: {getattr(_DEFAULTS, field) or 'the model default'}",
    )


def _plan(args) -> BenchmarkPlan:
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(BenchmarkPlan)
        if hasattr(args, field.name)
    }
    if "none" in values["fit_modes"]:
        values["fit_modes"] = ()
    # A square size stays a number, as in the results of earlier runs.
    height, width = parse_size(values["size"], option="--size")
    values["size"] = height if height == width else size_text((height, width))
    return BenchmarkPlan(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    )


def _read_results(path, what):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {str(path)!r} does not exist; expected a results.json "
            "written by `python -m benchmarks.run`."
        )
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"{what} {str(path)!r} is not valid JSON ({err}); expected a "
            "results.json written by `python -m benchmarks.run`."
        ) from err
    if not isinstance(document, dict) or "results" not in document:
        raise UserInputError(
            f"{what} {str(path)!r} has no 'results' list; expected a "
            "results.json written by `python -m benchmarks.run`."
        )
    return document


def run_command(args) -> int:
    """Runs (or reports) the benchmark; returns the CLI exit status."""
    out_dir = Path(args.out)
    baseline = args.compare and _read_results(args.compare, "--compare")
    if args.report_only:
        document = _read_results(out_dir / RESULTS_FILE, "results file")
    else:
        document = run_benchmark(_plan(args), out_dir, resume=args.resume)
    paths = write_report(document, out_dir)
    print(f"wrote {out_dir / RESULTS_FILE}, {paths['markdown']}, ", end="")
    print(paths["chart"])
    failed = [r for r in document["results"] if "error" in r]
    for record in failed:
        print(f"failed: {record}")
    status = REGRESSION_EXIT if failed else 0
    if baseline:
        rows = compare(document, baseline, threshold=args.threshold)
        print(format_comparison(rows) or "nothing in common with baseline")
        if any(row["regression"] for row in rows):
            status = REGRESSION_EXIT
    return status


def main(argv=None) -> int:
    """Runs the harness; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return run_command(args)
    except (UserInputError, FileNotFoundError, FileExistsError) as err:
        print(f"benchmarks.run: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
