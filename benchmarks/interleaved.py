"""`python -m benchmarks.interleaved`: our Keras model and torchvision's
timed call for call in one process.

The harness (`benchmarks.run`) times each runtime in its own process, one
after another, so a machine whose load changes between them (a shared CI
host) moves one runtime's number and not the other's. Here the two models
alternate, each call timed, so both see the same load; the ratio of their
medians is the comparison to quote. Both run with the same thread count on
random weights of the same architecture (`--variant torchvision`).

    python -m benchmarks.interleaved --output-stride 8 --rounds 12
    TF_ENABLE_ONEDNN_OPTS=1 python -m benchmarks.interleaved --out r.json
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import KERAS_RUNTIMES
from benchmarks.results import machine_info
from benchmarks.suite import (
    _build_model,
    add_model_options,
    model_plan,
    peer_architecture,
)
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.image_size import height_width, parse_size


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.interleaved", description=__doc__
    )
    add_model_options(parser)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--keras-runtime",
        nargs="+",
        default=["keras"],
        choices=tuple(KERAS_RUNTIMES),
        help="our runtimes to interleave with torchvision eager",
    )
    parser.add_argument("--out", default=None, help="also write JSON here")
    return parser


def _ours(plan, runtime, threads):
    import tensorflow as tf

    from keras_deeplab.models.derived import with_precision

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    jit_compile, precision = KERAS_RUNTIMES[runtime]
    model = with_precision(
        _build_model(plan, plan.backbones[0], plan.output_strides[0]),
        precision,
    )
    model.compile(jit_compile=jit_compile)
    return model.predict_on_batch


def _torchvision(plan, threads):
    import torch

    from benchmarks.peers import normalised_nchw, torchvision_deeplabv3

    torch.set_num_threads(threads)
    model = torchvision_deeplabv3(
        peer_architecture(plan, plan.backbones[0]),
        num_classes=plan.num_classes,
        output_stride=plan.output_strides[0],
    )

    def run(images):
        with torch.inference_mode():
            return model(normalised_nchw(images))["out"]

    return run


def interleave(runners, images, *, rounds, warmup) -> dict:
    """{name: {"median_s", "min_s", "seconds"}}: each round calls every
    runner once, in turn, after `warmup` untimed rounds."""
    seconds = {name: [] for name in runners}
    for round_index in range(warmup + rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(images)
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "seconds": values,
        }
        for name, values in seconds.items()
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    size = parse_size(args.size, option="--size")
    plan = model_plan(args)
    runners = {
        runtime: _ours(plan, runtime, args.threads)
        for runtime in args.keras_runtime
    }
    runners["torchvision"] = _torchvision(plan, args.threads)
    height, width = height_width(size)
    images = np.random.default_rng(0).uniform(0, 255, (1, height, width, 3))
    timings = interleave(
        runners,
        images.astype(np.float32),
        rounds=args.rounds,
        warmup=args.warmup,
    )
    peer = timings["torchvision"]["median_s"]
    machine = machine_info()
    print(
        f"{machine['cpu']}; flags {' '.join(machine['cpu_flags'])}; "
        f"TensorFlow oneDNN {machine['onednn']}; {args.threads} threads; "
        f"{args.architecture} {args.backbone} OS{args.output_stride} "
        f"{args.size}, batch 1, {args.rounds} rounds interleaved"
    )
    for name, timing in timings.items():
        print(
            f"{name:>12}: median {timing['median_s'] * 1e3:7.0f} ms, min "
            f"{timing['min_s'] * 1e3:7.0f} ms, "
            f"{timing['median_s'] / peer:.3f}x torchvision"
        )
    if args.out:
        document = {"machine": machine, "arguments": vars(args)}
        document["timings"] = timings
        atomic_write_text(Path(args.out), json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
