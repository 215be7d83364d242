"""model.fit throughput of DeepLabV3-ResNet50 (images/s), one JSON line per run.

Usage: python benchmarks/fit_throughput.py [--size 321] [--batch 4] [--steps 6]
       [--precision float32 mixed_bfloat16] [--jit] [--out results.json]

Runs each setting in a fresh subprocess (the dtype policy and XLA flags are
process-wide), warms up once, then times `--steps` steps of `model.fit` on
in-memory random data, so the input pipeline is not what is measured. Compare
settings as ratios from one run: the machine is shared and noisy.
"""

import argparse
import json
import subprocess
import sys
import time

_ONE_RUN = """
import json, sys, time
import keras, numpy as np
size, batch, steps, precision, jit = (int(sys.argv[1]), int(sys.argv[2]),
    int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1")
keras.config.set_dtype_policy(precision)
from keras_deeplab import DeepLabV3
from keras_deeplab.training.losses import segmentation_loss
model = DeepLabV3(21, output_stride=16)
model.compile(optimizer=keras.optimizers.SGD(0.007, momentum=0.9),
              loss=segmentation_loss(), jit_compile=jit)
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype("float32")
masks = rng.integers(0, 21, (batch * steps, size, size)).astype("int32")
model.fit(images[:batch], masks[:batch], batch_size=batch, verbose=0)
start = time.perf_counter()
model.fit(images, masks, batch_size=batch, verbose=0)
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"size": size, "batch": batch, "precision":
      precision, "jit_compile": jit, "images_per_s": batch * steps / seconds}))
"""


def run(size, batch, steps, precision, jit):
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _ONE_RUN,
            str(size),
            str(batch),
            str(steps),
            precision,
            "1" if jit else "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(
        x for x in completed.stdout.splitlines() if x.startswith("RESULT ")
    )
    return json.loads(line.removeprefix("RESULT "))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--precision", nargs="+", default=["float32", "mixed_bfloat16"]
    )
    parser.add_argument("--jit", action="store_true", help="also XLA")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    for precision in args.precision:
        for jit in (False, True) if args.jit else (False,):
            result = run(args.size, args.batch, args.steps, precision, jit)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "results": results,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
