"""The benchmark suite: export each model once, time every runtime in its own
process, and keep all results in one JSON document.

The document is rewritten atomically after every measurement, so an
interrupted run keeps what it measured and `resume=True` continues it.
"""

import contextlib
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.measure import (
    KERAS_RUNTIMES,
    LITERT_RUNTIMES,
    ONNX_RUNTIMES,
    OPENVINO_RUNTIME,
    PEER_RUNTIMES,
    RESULT_PREFIX,
    RUNTIMES,
    TENSORFLOW_FREE,
)
from benchmarks.results import (
    RESULTS_FILE,
    ResultsFile,
    result_key,
)
from keras_deeplab.models.complexity import (
    FLOPS_PER_MAC,
    TRAINING_FLOPS_PER_MAC,
)
from keras_deeplab.spec import (
    ARCHITECTURES,
    BACKBONES,
    OUTPUT_STRIDES,
    VARIANTS,
    ModelSpec,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import height_width, parse_size
from keras_deeplab.utils.memory import measured_step

# The repository root: measurement processes import `benchmarks` from it.
_REPO_ROOT = Path(__file__).resolve().parents[1]

# `train`'s step as it runs with jit_compile false (graph) and true (xla).
FIT_MODES = ("graph", "xla")
FIT_PRECISIONS = ("float32", "mixed_bfloat16")
_FIT_OUTPUT_STRIDE = 16  # the paper's training stride


def peers_installed() -> bool:
    """torch and torchvision importable: the peer runtimes can be timed."""
    return all(
        importlib.util.find_spec(name) for name in ("torch", "torchvision")
    )


def default_runtimes() -> tuple:
    """Every runtime, the torchvision peers only where torch is installed."""
    return tuple(
        runtime
        for runtime in RUNTIMES
        if runtime not in PEER_RUNTIMES or peers_installed()
    )


@dataclasses.dataclass(frozen=True)
class BenchmarkPlan:
    """What to measure. Defaults are the full suite of the README."""

    # Input size: a side (513, the paper's eval crop) or "HxW" text
    # ("512x1024": height 512, width 1024, Cityscapes at half resolution).
    size: int | str = 513
    batches: tuple = (1, 8)
    output_strides: tuple = OUTPUT_STRIDES
    backbones: tuple = ("resnet50", "resnet101")
    runtimes: tuple = dataclasses.field(default_factory=default_runtimes)
    variant: str = (
        "torchvision"  # same layout as the peers; or keras_applications
    )
    architecture: str = "deeplabv3"  # or deeplabv3plus (the peers stay V3)
    warmup: int = 1  # untimed calls before timing (tracing, allocation)
    repeats: int = 3  # timed calls; median and minimum are reported
    threads: int = os.cpu_count() or 1  # for every runtime and the matmul
    num_classes: int = 21
    backbone_width: int = 64  # 64 is the real ResNet; less for smoke tests
    # None: the head's own (256 for ASPP, 128 for LR-ASPP)
    head_filters: int | None = None
    fit_modes: tuple = FIT_MODES  # () skips the training benchmark
    fit_precisions: tuple = FIT_PRECISIONS
    fit_size: int = 321  # the paper's training crop
    fit_batch: int = 4
    fit_steps: int = 3  # timed steps after one warm-up step
    calibration_images: int = 2  # int8 speed does not depend on the count


def add_model_options(parser, *, output_stride=8):
    """--architecture, --backbone, --output-stride, --size and --threads:
    the one model the single-model scripts (interleaved, op_profile)
    measure."""
    parser.add_argument("--architecture", default="deeplabv3")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--output-stride", type=int, default=output_stride)
    parser.add_argument("--size", default="513", metavar="H[xW]")
    parser.add_argument("--threads", type=int, default=2)


def model_plan(args) -> BenchmarkPlan:
    """The BenchmarkPlan of `add_model_options`' arguments."""
    return BenchmarkPlan(
        size=args.size,
        architecture=args.architecture,
        backbones=(args.backbone,),
        output_strides=(args.output_stride,),
        threads=args.threads,
    )


def _check_subset(name, values, allowed):
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise UserInputError(
            f"{name}={list(values)} is invalid: {unknown or 'empty'}; "
            f"expected one or more of {list(allowed)}."
        )


def validate_plan(plan: BenchmarkPlan) -> BenchmarkPlan:
    """Raises UserInputError for values the suite cannot measure."""
    _check_subset("runtimes", plan.runtimes, RUNTIMES)
    _check_subset("output_strides", plan.output_strides, OUTPUT_STRIDES)
    _check_subset("backbones", plan.backbones, tuple(BACKBONES))
    _check_subset("variant", (plan.variant,), VARIANTS)
    _check_subset("architecture", (plan.architecture,), ARCHITECTURES)
    if set(plan.runtimes) & set(PEER_RUNTIMES) and not peers_installed():
        raise UserInputError(
            "the torchvision runtimes need torch and torchvision; install "
            "them (README, test command) or leave those runtimes out."
        )
    if plan.fit_modes:
        _check_subset("fit_modes", plan.fit_modes, FIT_MODES)
        _check_subset("fit_precisions", plan.fit_precisions, FIT_PRECISIONS)
    parse_size(plan.size, option="--size")
    for name in ("warmup", "repeats", "threads", "fit_size"):
        if getattr(plan, name) < (0 if name == "warmup" else 1):
            raise UserInputError(
                f"{name}={getattr(plan, name)} must be a positive integer."
            )
    if not plan.batches or min(plan.batches) < 1:
        raise UserInputError(
            f"batches={list(plan.batches)} is invalid; expected positive "
            "batch sizes, e.g. --batch 1 8."
        )
    return plan


def _child_environment(spec):
    threads = spec["threads"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # ONNX Runtime and LiteRT run without TensorFlow; the numpy backend lets
    # keras_deeplab import without loading it, so their memory is their own.
    light = spec.get("runtime") in TENSORFLOW_FREE
    environment["KERAS_BACKEND"] = "numpy" if light else "tensorflow"
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO_ROOT)] + ([path] if path else [])
    )
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[variable] = str(threads)
    return environment


def measure(spec: dict) -> dict:
    """Runs one measurement in a fresh Python process; returns its result.

    A failed measurement returns {"error": last line of its stderr}: one
    broken runtime must not hide the others.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure"] + [json.dumps(spec)],
        capture_output=True,
        text=True,
        env=_child_environment(spec),
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line.removeprefix(RESULT_PREFIX))
    errors = completed.stderr.strip().splitlines() or ["no output"]
    return {"error": f"exit {completed.returncode}: {errors[-1]}"}


def _calibration_images(plan):
    from keras_deeplab.data.synthetic import synthetic_sample

    height, width = height_width(plan.size)
    return [
        synthetic_sample(i, size=max(height, width))[0][:height, :width].astype(
            np.float32
        )
        for i in range(plan.calibration_images)
    ]


def peer_architecture(plan, backbone) -> str:
    """torchvision's builder for the benchmarked model: its LR-ASPP for
    ours, else its DeepLabV3 (torchvision has no V3+; that peer stays V3)."""
    head = "lraspp" if plan.architecture == "lraspp" else "deeplabv3"
    return f"{head}_{backbone}"


@contextlib.contextmanager
def _export_cost(costs, runtime):
    """Records the wall time and peak resident memory of the export
    written within, as `costs[runtime]` (the benchmark's export columns)."""
    with measured_step() as cost:
        yield
    peak = cost["peak_mb"]
    costs[runtime] = {
        "export_s": round(cost["seconds"], 1),
        "export_peak_mb": None if peak is None else round(peak),
    }


def export_artefacts(model, directory, *, plan, backbone, output_stride):
    """({runtime: path} of the artefact each planned runtime loads,
    {runtime: its export's time and peak memory})."""
    from keras_deeplab.export.artefacts import export
    from keras_deeplab.export.openvino_ir import onnx_to_openvino
    from keras_deeplab.models.deeplab import class_names

    directory = Path(directory)
    calibration = _calibration_images(plan)
    paths, costs = {}, {}
    if set(plan.runtimes) & set(KERAS_RUNTIMES):
        path = directory / "model.keras"
        model.save(path)
        paths.update({runtime: path for runtime in KERAS_RUNTIMES})
    if "saved_model" in plan.runtimes:
        with _export_cost(costs, "saved_model"):
            paths["saved_model"] = export(model, "saved_model", directory)
    for runtime, quantize in ONNX_RUNTIMES.items():
        if runtime in plan.runtimes:
            with _export_cost(costs, runtime):
                paths[runtime] = export(
                    model,
                    "onnx",
                    directory,
                    quantize=quantize,
                    representative_images=calibration,
                )
    for runtime, quantize in LITERT_RUNTIMES.items():
        if runtime in plan.runtimes:
            with _export_cost(costs, runtime):
                paths[runtime] = export(
                    model,
                    "tflite",
                    directory,
                    size=plan.size,
                    quantize=quantize,
                    representative_images=calibration,
                )
    if OPENVINO_RUNTIME in plan.runtimes:
        with _export_cost(costs, OPENVINO_RUNTIME):
            onnx_path = paths.get("onnxruntime") or export(
                model, "onnx", directory
            )
            paths[OPENVINO_RUNTIME] = onnx_to_openvino(
                onnx_path,
                directory / "openvino.xml",
                class_names=class_names(model),
            )
    torchvision_onnx = {"torchvision_onnxruntime", "torchvision_openvino"}
    if torchvision_onnx & set(plan.runtimes):
        from benchmarks.peers import (
            export_torchvision_onnx,
            torchvision_deeplabv3,
        )

        onnx_path = export_torchvision_onnx(
            torchvision_deeplabv3(
                peer_architecture(plan, backbone),
                num_classes=plan.num_classes,
                output_stride=output_stride,
            ),
            directory / "torchvision.onnx",
        )
        paths["torchvision_onnxruntime"] = onnx_path
        paths["torchvision_openvino"] = onnx_to_openvino(
            onnx_path,
            directory / "torchvision.xml",
            class_names=[f"class_{i}" for i in range(plan.num_classes)],
        )
    for runtime in set(PEER_RUNTIMES) - set(paths):
        paths[runtime] = ""  # eager torchvision builds its own model
    return {runtime: str(path) for runtime, path in paths.items()}, costs


def _efficiency(flops_per_s, results):
    return flops_per_s / (results.matmul_gflops * 1e9)


def model_spec(plan, backbone, output_stride) -> ModelSpec:
    """The ModelSpec of one benchmarked model."""
    return ModelSpec(
        architecture=plan.architecture,
        num_classes=plan.num_classes,
        backbone=backbone,
        output_stride=output_stride,
        variant=plan.variant,
        backbone_width=plan.backbone_width,
        head_filters=plan.head_filters,
    )


def _build_model(plan, backbone, output_stride, size=None):
    from keras_deeplab.models.deeplab import build_model

    shape = (*height_width(size), 3) if size else (None, None, 3)
    return build_model(
        model_spec(plan, backbone, output_stride), input_shape=shape
    )


def _model_record(model, plan, backbone, output_stride):
    from keras_deeplab.models.complexity import graph_conv_macs, model_macs

    fixed = _build_model(plan, backbone, output_stride, plan.size)
    return {
        "kind": "model",
        "backbone": backbone,
        "output_stride": output_stride,
        "size": plan.size,
        "params": model.count_params(),
        "gmacs": model_macs(fixed) / 1e9,
        "graph_gmacs": graph_conv_macs(model, size=plan.size) / 1e9,
    }


def _inference_keys(plan, backbone, output_stride):
    base = {"kind": "inference", "backbone": backbone, "size": plan.size}
    base["output_stride"] = output_stride
    return [
        {**base, "runtime": runtime, "batch": batch}
        for runtime in plan.runtimes
        for batch in plan.batches
    ]


def _benchmark_model(results, plan, backbone, output_stride, log):
    """Exports one model, then times each runtime and batch size."""
    import keras

    from keras_deeplab.export.artefacts import disk_size_mb

    keys = _inference_keys(plan, backbone, output_stride)
    if all(result_key(key) in results.done for key in keys):
        return
    keras.utils.set_random_seed(0)  # speed does not depend on the weights
    model = _build_model(plan, backbone, output_stride)
    info = _model_record(model, plan, backbone, output_stride)
    results.add(info)
    log(f"{backbone} OS{output_stride}: {info['gmacs']:.1f} GMACs, exporting")
    with tempfile.TemporaryDirectory(dir=results.path.parent) as directory:
        artefacts, export_costs = export_artefacts(
            model,
            directory,
            plan=plan,
            backbone=backbone,
            output_stride=output_stride,
        )
        keras.backend.clear_session()
        for key in keys:
            if result_key(key) in results.done:
                continue
            path = artefacts[key["runtime"]]
            spec = {**key, "artefact": path, "threads": plan.threads}
            spec.update(warmup=plan.warmup, repeats=plan.repeats)
            spec.update(num_classes=plan.num_classes)
            spec.update(peer_arch=peer_architecture(plan, backbone))
            record = {**key, **measure(spec), "gmacs": info["gmacs"]}
            record.update(export_costs.get(key["runtime"], {}))
            record["artefact_mb"] = (
                round(disk_size_mb(path), 1) if path else None
            )
            if "median_s" in record:
                record["images_per_s"] = key["batch"] / record["median_s"]
                flops = FLOPS_PER_MAC * 1e9 * info["gmacs"]
                flops *= record["images_per_s"]
                record["efficiency"] = _efficiency(flops, results)
            results.add(record)
            log(_describe(record))


def _describe(record):
    if "error" in record:
        return (
            f"  {record['runtime']} batch {record['batch']}: FAILED "
            + (record["error"])
        )
    return (
        f"  {record['runtime']} batch {record['batch']}: "
        f"{record['median_s'] * 1e3:.0f} ms median, "
        f"{record['efficiency']:.0%} of matmul peak, "
        f"{record['peak_rss_mb']:.0f} MB peak RSS"
    )


def _fit_kinds(plan):
    """(kind, mode) of every training measurement in the plan."""
    kinds = [("fit", mode) for mode in plan.fit_modes]
    if plan.fit_modes and set(plan.runtimes) & set(PEER_RUNTIMES):
        kinds.append(("torch_fit", "eager"))  # torchvision's training step
    return kinds


def _benchmark_fit(results, plan, log):
    for kind, mode in _fit_kinds(plan):
        for precision in plan.fit_precisions:
            key = {"kind": kind, "mode": mode, "precision": precision}
            key.update(size=plan.fit_size, batch=plan.fit_batch)
            if result_key(key) in results.done:
                continue
            spec = {**key, "steps": plan.fit_steps, "threads": plan.threads}
            model = model_spec(plan, plan.backbones[0], _FIT_OUTPUT_STRIDE)
            spec.update(model=model.to_dict(), num_classes=plan.num_classes)
            spec.update(output_stride=_FIT_OUTPUT_STRIDE)
            spec.update(peer_arch=peer_architecture(plan, plan.backbones[0]))
            record = {**key, **measure(spec)}
            if "images_per_s" in record:
                log(
                    f"{kind} {mode} {precision}: "
                    f"{record['images_per_s']:.2f} images/s"
                )
            else:
                log(f"{kind} {mode} {precision}: FAILED {record['error']}")
            if "gmacs" in record:
                flops = TRAINING_FLOPS_PER_MAC * 1e9 * record["gmacs"]
                flops *= record["images_per_s"]
                record["efficiency"] = _efficiency(flops, results)
            results.add(record)


def run_benchmark(plan: BenchmarkPlan, out_dir, *, resume=False, log=print):
    """Measures `plan` and writes `out_dir`/results.json.

    The matmul peak is measured first, in this run, so every efficiency is
    a ratio of two numbers from the same machine state.

    Returns:
        The results document (dict).
    """
    validate_plan(plan)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out_dir / RESULTS_FILE, plan=plan, resume=resume)
    peak = measure({"kind": "matmul", "threads": plan.threads})
    if "error" in peak:
        raise RuntimeError(f"matmul reference failed: {peak['error']}")
    results.document["matmul"] = peak
    results.save()
    log(f"fp32 matmul peak: {peak['matmul_gflops']:.0f} GFLOP/s")
    for backbone in plan.backbones:
        for output_stride in plan.output_strides:
            _benchmark_model(results, plan, backbone, output_stride, log)
    _benchmark_fit(results, plan, log)
    return results.document
