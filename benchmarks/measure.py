"""One measurement in a fresh process: `python -m benchmarks.measure SPEC`.

Each runtime is timed in its own process so that its peak resident memory
is its own, and process-wide settings (dtype policy, threads) never leak
between measurements. Prints one line `RESULT {json}` on success.
"""

import json
import sys
import time

import numpy as np

from keras_deeplab.utils.image_size import height_width
from keras_deeplab.utils.memory import peak_rss_mb, rss_mb
from keras_deeplab.utils.timing import time_calls

RESULT_PREFIX = "RESULT "
# Keras runtime -> (jit_compile, precision); all load the saved .keras model.
KERAS_RUNTIMES = {
    "keras": (False, "float32"),
    "keras_xla": (True, "float32"),
    "keras_bf16": (False, "bfloat16"),
}
# ONNX Runtime runtime -> the quantization of our ONNX export it runs.
ONNX_RUNTIMES = {"onnxruntime": "fp32", "onnxruntime_int8": "int8"}
# LiteRT runtime -> the TFLite quantization it runs.
LITERT_RUNTIMES = {
    "litert_fp32": "fp32",
    "litert_fp16": "fp16",
    "litert_int8": "int8",
}
# Our OpenVINO IR (fp32 weights) in OpenVINO's CPU runtime at its fp32
# precision hint, as verify-export runs it.
OPENVINO_RUNTIME = "openvino"
# torchvision's model (benchmarks/peers.py): eager (autocast precision), and
# its own ONNX export in ONNX Runtime and, converted, in OpenVINO. Timed only
# when torch is there.
PEER_RUNTIMES = {
    "torchvision": "float32",
    "torchvision_bf16": "bfloat16",
    "torchvision_onnxruntime": None,
    "torchvision_openvino": None,
}
RUNTIMES = (
    *KERAS_RUNTIMES,
    "saved_model",
    *ONNX_RUNTIMES,
    OPENVINO_RUNTIME,
    *LITERT_RUNTIMES,
    *PEER_RUNTIMES,
)
# Runtimes whose process never imports TensorFlow.
TENSORFLOW_FREE = (
    *ONNX_RUNTIMES,
    OPENVINO_RUNTIME,
    *LITERT_RUNTIMES,
    *PEER_RUNTIMES,
)
_MATMUL_SIZE = 3072  # large enough to be compute bound, ~58 GFLOP per call


def _configure_tensorflow(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def matmul_peak(spec) -> dict:
    """Best fp32 GFLOP/s of a square matmul, TensorFlow and NumPy."""
    tf = _configure_tensorflow(spec["threads"])
    size = _MATMUL_SIZE
    flops = 2 * size**3
    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    a_tensor = tf.constant(a)
    matmul = tf.function(tf.linalg.matmul)
    timings = {
        "tensorflow": time_calls(
            lambda: matmul(a_tensor, a_tensor).numpy(), warmup=1, repeats=5
        ),
        "numpy": time_calls(lambda: a @ a, warmup=1, repeats=5),
    }
    gflops = {k: flops / v["min_s"] / 1e9 for k, v in timings.items()}
    return {"matmul_gflops": max(gflops.values()), "by_library": gflops}


def _keras_runner(path, runtime, threads):
    _configure_tensorflow(threads)
    import keras

    from keras_deeplab.models.derived import with_precision

    jit_compile, precision = KERAS_RUNTIMES[runtime]
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    model = with_precision(model, precision)
    model.compile(jit_compile=jit_compile)
    return model.predict_on_batch


def _torch_runner(spec, path):
    import torch

    from benchmarks.peers import normalised_nchw, torchvision_deeplabv3

    torch.set_num_threads(spec["threads"])
    if spec["runtime"] in ("torchvision_onnxruntime", "torchvision_openvino"):
        from keras_deeplab.export.runtimes import artefact_runner

        run = artefact_runner(path, num_threads=spec["threads"])
        return lambda images: run(normalised_nchw(images).numpy())
    model = torchvision_deeplabv3(
        spec["peer_arch"],
        num_classes=spec["num_classes"],
        output_stride=spec["output_stride"],
    )
    dtype = (
        torch.bfloat16 if PEER_RUNTIMES[spec["runtime"]] == "bfloat16" else None
    )

    def run(images):
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=dtype, enabled=dtype is not None),
        ):
            return model(normalised_nchw(images))["out"]

    return run


def make_runner(spec):
    """fn(images) -> outputs for one runtime and its artefact."""
    from keras_deeplab.export.runtimes import artefact_runner

    runtime, path, threads = spec["runtime"], spec["artefact"], spec["threads"]
    if runtime in KERAS_RUNTIMES:
        return _keras_runner(path, runtime, threads)
    if runtime in PEER_RUNTIMES:
        return _torch_runner(spec, path)
    if runtime == "saved_model":
        _configure_tensorflow(threads)  # before TensorFlow runs any op
    return artefact_runner(path, num_threads=threads)


def inference(spec) -> dict:
    """Latency of one runtime at one batch size on random RGB images."""
    run = make_runner(spec)
    height, width = height_width(spec["size"])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (spec["batch"], height, width, 3))
    images = images.astype(np.float32)
    return time_calls(
        lambda: run(images), warmup=spec["warmup"], repeats=spec["repeats"]
    )


def training(spec) -> dict:
    """Images/s of `keras-deeplab train`'s step (`benchmarks.train_step`)
    on in-memory data; the input pipeline is not measured."""
    _configure_tensorflow(spec["threads"])
    from benchmarks.train_step import random_batch, training_model
    from keras_deeplab.models.complexity import model_macs

    size, batch, steps = spec["size"], spec["batch"], spec["steps"]
    model = training_model(
        spec["model"],
        size=size,
        precision=spec["precision"],
        jit_compile=spec["mode"] == "xla",
        steps=steps + 1,
    )
    images, masks = random_batch(
        batch=batch * steps, size=size, num_classes=spec["model"]["num_classes"]
    )
    fit = {"batch_size": batch, "verbose": 0, "shuffle": False}
    model.fit(images[:batch], masks[:batch], **fit)  # traces and compiles
    start = time.perf_counter()
    model.fit(images, masks, **fit)
    seconds = time.perf_counter() - start
    return {
        "images_per_s": batch * steps / seconds,
        "gmacs": model_macs(model) / 1e9,
    }


def torch_training(spec) -> dict:
    """torchvision's training-step images/s on the same data and recipe:
    SGD with momentum, pixel-wise cross-entropy, train mode (BN updates)."""
    import torch

    from benchmarks.peers import normalised_nchw, torchvision_deeplabv3

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    size, batch, steps = spec["size"], spec["batch"], spec["steps"]
    model = torchvision_deeplabv3(
        spec["peer_arch"],
        num_classes=spec["num_classes"],
        output_stride=spec["output_stride"],
    ).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    rng = np.random.default_rng(0)
    images = normalised_nchw(rng.uniform(0, 255, (batch, size, size, 3)))
    masks = torch.from_numpy(
        rng.integers(0, spec["num_classes"], (batch, size, size))
    )
    dtype = torch.bfloat16 if spec["precision"] == "mixed_bfloat16" else None

    def step():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(images)["out"].float(), masks)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {"images_per_s": batch * steps / (time.perf_counter() - start)}


_KINDS = {
    "matmul": matmul_peak,
    "inference": inference,
    "fit": training,
    "torch_fit": torch_training,
}


def main(argv=None):
    spec = json.loads((argv or sys.argv[1:])[0])
    start_rss_mb = rss_mb()  # Python + keras_deeplab imports
    result = _KINDS[spec["kind"]](spec)
    result["start_rss_mb"] = round(start_rss_mb, 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
