"""The results document of a benchmark run: machine, plan, records."""

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

from keras_deeplab.utils.atomic import atomic_write_text

RESULTS_FILE = "results.json"


# The CPU features that decide which kernels TensorFlow, oneDNN, PyTorch
# and OpenVINO run (and whether oneDNN is on by default in TensorFlow).
_VECTOR_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def cpu_flags() -> list:
    """The vector-ISA flags of this CPU that change the kernels libraries
    run (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [x for x in handle if x.startswith("flags")]
    except OSError:
        return []
    present = set(lines[0].split(":", 1)[1].split()) if lines else set()
    return [flag for flag in _VECTOR_FLAGS if flag in present]


def onednn_setting() -> str:
    """Whether TensorFlow runs oneDNN in this process, and why: set by
    TF_ENABLE_ONEDNN_OPTS, or TensorFlow's default for this CPU (on where
    it has AVX512_VNNI, AVX512_BF16 or AMX)."""
    value = os.environ.get(ONEDNN_ENV)
    why = f"{ONEDNN_ENV}={value}" if value else "TensorFlow's default here"
    try:  # TensorFlow's own answer; a private module, so guarded
        from tensorflow.python.util import _pywrap_util_port

        enabled = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        return f"unknown ({why})"
    return f"{'on' if enabled else 'off'} ({why})"


def machine_info() -> dict:
    """CPU model, flags, core count, memory, oneDNN and library versions."""
    from importlib import metadata

    cpu = platform.processor()
    with open("/proc/cpuinfo") as handle:  # Linux; names the actual CPU
        names = [x for x in handle if x.startswith("model name")]
    cpu = names[0].split(":", 1)[1].strip() if names else cpu
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    versions = {}
    for package in ("tensorflow-cpu", "tensorflow", "keras", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions["ai-edge-litert"] = metadata.version("ai-edge-litert")
    return {
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "onednn": onednn_setting(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def result_key(record: dict) -> tuple:
    """Identity of a measurement, for resuming and for --compare."""
    fields = ("kind", "backbone", "output_stride", "runtime", "batch")
    fields += ("size", "mode", "precision")
    return tuple(record.get(field) for field in fields)


class ResultsFile:
    """The JSON document of one run, saved after every added record."""

    def __init__(self, path, *, plan, resume):
        self.path = Path(path)
        if self.path.exists() and not resume:
            raise FileExistsError(
                f"{str(self.path)!r} exists; pass --resume to continue that "
                "run or choose another --out folder."
            )
        if self.path.exists():
            self.document = json.loads(self.path.read_text())
        else:
            self.document = {"machine": machine_info(), "results": []}
        self.document["plan"] = dataclasses.asdict(plan)
        self.done = {result_key(r) for r in self.document["results"]}

    def add(self, record: dict):
        self.document["results"] = [
            r
            for r in self.document["results"]
            if result_key(r) != result_key(record)
        ] + [record]
        self.done.add(result_key(record))
        if "matmul" in self.document:  # efficiencies are relative to it
            record.setdefault("matmul_gflops", self.matmul_gflops)
        self.save()

    @property
    def matmul_gflops(self) -> float:
        return self.document["matmul"]["matmul_gflops"]

    def save(self):
        self.document["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        text = json.dumps(self.document, indent=2) + "\n"
        atomic_write_text(self.path, text)
