"""Training and inference images/s and MFU on an accelerator, under JAX.

Run as `KERAS_BACKEND=jax python -m benchmarks.accelerator` from a clone
(benchmarks/gpu.sh does). Needs Keras and JAX only: GPU hosts without
TensorFlow can run it. Prints one JSON document.

Model FLOP utilisation (MFU) = model FLOPs per second / the chip's dense
peak for the precision: 2 FLOPs per MAC forward, 6 for a training step
(forward, input gradients, weight gradients).
"""

import argparse
import json

from keras_deeplab.models.complexity import (
    FLOPS_PER_MAC,
    TRAINING_FLOPS_PER_MAC,
)
from keras_deeplab.utils.timing import time_calls

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's specs.
BF16_PEAK_TFLOPS = {
    "H100 80GB HBM3": 989.4,  # SXM
    "H100 PCIe": 756.0,
    "H200": 989.4,
    "A100": 312.0,
    "L4": 121.0,
}


def chip_peak_tflops(device_kind: str, override: float | None = None):
    """Known bf16 peak for a JAX device_kind, or `override`, or None."""
    if override:
        return override
    for name, peak in BF16_PEAK_TFLOPS.items():
        if name in device_kind:
            return peak
    return None


def measure_throughput(args) -> dict:
    """Images/s of `model.fit` steps and of `predict_on_batch`."""
    import jax

    from benchmarks.train_step import random_batch, training_model
    from keras_deeplab.models.complexity import model_macs

    size, batch = args.size, args.batch
    spec = {
        "num_classes": args.num_classes,
        "output_stride": args.output_stride,
        "backbone_width": args.backbone_width,
        "head_filters": args.head_filters,
    }
    model = training_model(
        spec,
        size=size,
        precision=args.precision,
        jit_compile=True,
        steps=args.warmup + args.steps + 1,
    )
    images, masks = random_batch(
        batch=batch, size=size, num_classes=args.num_classes
    )

    def train_step():
        # Reading the loss back waits for the device to finish the step.
        float(model.train_on_batch(images, masks, return_dict=True)["loss"])

    def predict_step():
        model.predict_on_batch(images)

    timing = {"warmup": args.warmup, "repeats": args.steps}
    train_s = time_calls(train_step, **timing)["median_s"]
    predict_s = time_calls(predict_step, **timing)["median_s"]
    macs = model_macs(model)
    device = jax.devices()[0]
    peak = chip_peak_tflops(device.device_kind, args.peak_tflops)
    result = {
        "device": f"{device.platform}: {device.device_kind}",
        "devices": jax.device_count(),
        "precision": args.precision,
        "size": size,
        "batch": batch,
        "output_stride": args.output_stride,
        "gmacs_per_image": macs / 1e9,
        "train_images_per_s": batch / train_s,
        "predict_images_per_s": batch / predict_s,
        "peak_tflops": peak,
    }
    for name, flops_per_mac in (
        ("train", TRAINING_FLOPS_PER_MAC),
        ("predict", FLOPS_PER_MAC),
    ):
        achieved = flops_per_mac * macs * result[f"{name}_images_per_s"]
        result[f"{name}_tflops"] = achieved / 1e12
        result[f"{name}_mfu"] = achieved / (peak * 1e12) if peak else None
    return result


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--backbone-width", type=int, default=64)
    parser.add_argument("--head-filters", type=int, default=256)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="chip peak for MFU when its device_kind is not in the table",
    )
    parser.add_argument("--out", default=None, help="also write JSON here")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    text = json.dumps(measure_throughput(args), indent=2)
    print(text)
    if args.out:
        from keras_deeplab.utils.atomic import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
