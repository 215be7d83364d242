"""The results document of a benchmark run: machine, plan, records."""

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

from keras_deeplab.atomic import atomic_write_text

RESULTS_FILE = "results.json"


def machine_info() -> dict:
    """CPU model, core count, memory and library versions of this run."""
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
