"""`python -m benchmarks.engines`: images per second and peak memory of one
segmentation job run three ways on the same images, in one run: one process
(the job's own core, no engine), Beam's DirectRunner (2 worker processes)
and Ray Data (a local cluster of 2 CPUs).

    python -m benchmarks.engines --images 200 --size 512 \
        --architecture lraspp --backbone mobilenet_v3_large --out e.json
    python -m benchmarks.engines --architecture deeplabv3 --backbone resnet50

Each way runs in a fresh child process, timed from its start to its last
line (imports, model loading and worker start-up included: what a user
waits for), so the ratios are the engines' whole overhead on these cores.
Memory is sampled every 0.2 s over the child and all its descendants: the
peak resident memory of the driver and of each worker process. The model
has random weights (speed does not depend on them); the images are smooth
synthetic scenes saved as JPEG.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results import machine_info
from keras_deeplab.utils.atomic import atomic_write_text

WAYS = ("one_process", "beam", "ray")
_SAMPLE_SECONDS = 0.2
# Beam starts each worker through a small launcher process: not a worker.
_LAUNCHER_MB = 100
# Masks of one model call are written within this of each other.
_SAME_BATCH_SECONDS = 0.05


def _write_images(folder, count, size):
    from PIL import Image

    from keras_deeplab.data.synthetic import synthetic_sample

    folder.mkdir(parents=True)
    for index in range(count):
        image, _ = synthetic_sample(index, size=size)
        Image.fromarray(image).save(folder / f"{index:05d}.jpg", quality=90)


def _save_model(path, args):
    from benchmarks.suite import BenchmarkPlan, _build_model

    plan = BenchmarkPlan(
        architecture=args.architecture,
        backbones=(args.backbone,),
        output_strides=(args.output_stride,),
        variant="torchvision",
    )
    _build_model(plan, args.backbone, args.output_stride).save(path)


def one_process(pattern, model, out, batch_size=8):
    """The job in this process: what an engine's worker does, without it."""
    from keras_deeplab.inference import jobs
    from keras_deeplab.inference.batch import segment_images

    files = jobs.LocalFiles()
    settings = jobs.JobSettings(
        model=model, out=out, root=jobs.job_root([pattern])
    )
    inputs = jobs.expand_inputs([pattern], files)
    loaded = jobs.load_job_model(settings)
    records = []
    for first in range(0, len(inputs), batch_size):
        todo = []
        for item in inputs[first : first + batch_size]:
            record, image = jobs.prepare(settings, item, files)
            if record is None:
                todo.append((item, image))
            else:
                records.append(record)
        for result in segment_images(loaded, todo, settings.options):
            records.append(
                jobs.write_outputs(settings, result.key, result, files)
            )
    print(jobs.write_manifest(out, records, files).line)


class _MemorySampler(threading.Thread):
    """Peak RSS (MB) of a process and each of its descendants, by pid."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.root = pid
        self.peaks = {}  # pid -> (MB, command line)
        self.done = threading.Event()

    def run(self):
        import psutil

        while not self.done.is_set():
            try:
                root = psutil.Process(self.root)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    mb = process.memory_info().rss / 2**20
                    line = " ".join(process.cmdline())[:120]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if mb > self.peaks.get(process.pid, (0, ""))[0]:
                    self.peaks[process.pid] = (mb, line)
            self.done.wait(_SAMPLE_SECONDS)


def _workers(peaks, way):
    """Peak MB of the processes that ran the model."""
    marker = {"beam": "sdk_worker_main", "ray": "MapWorker"}.get(way)
    if marker is None:
        return []
    return sorted(
        round(mb)
        for mb, line in peaks.values()
        if marker in line and mb > _LAUNCHER_MB
    )


def _steady_images_per_s(out) -> float:
    """Images per second once running: the masks written after the first
    batch, over the time from the first batch to the last mask (start-up
    and the manifest left out)."""
    times = sorted(p.stat().st_mtime for p in Path(out).rglob("*_mask.png"))
    first_batch = sum(1 for t in times if t <= times[0] + _SAME_BATCH_SECONDS)
    if len(times) <= first_batch:
        return float("nan")
    return (len(times) - first_batch) / (times[-1] - times[0])


def _run(way, pattern, model, out):
    if way == "one_process":
        command = [sys.executable, "-m", "benchmarks.engines", "--one-process",
                   pattern, model, out]  # fmt: skip
    else:
        command = [sys.executable, "-m", "keras_deeplab", "predict",
                   "--engine", way, pattern, "--model", model,
                   "--out", out]  # fmt: skip
        command += (
            ["--engine-option", "direct_num_workers=2"]
            if way == "beam"
            else ["--engine-option", "num_cpus=2"]
        )
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler = _MemorySampler(child.pid)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"{way} exited {child.returncode}: {output}")
    driver = sampler.peaks.get(child.pid, (0, ""))[0]
    return {
        "seconds": seconds,
        "last_line": output.strip().splitlines()[-1],
        "driver_peak_mb": round(driver),
        "worker_peak_mb": _workers(sampler.peaks, way),
        "steady_images_per_s": _steady_images_per_s(out),
    }


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--one-process"]:
        one_process(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines", description=__doc__
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--architecture", default="lraspp")
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory(prefix="engines_bench_") as work:
        work = Path(work)
        _write_images(work / "images", args.images, args.size)
        model = str(work / "model.keras")
        _save_model(model, args)
        pattern = str(work / "images" / "*.jpg")
        for way in args.ways.split(","):
            results[way] = _run(way, pattern, model, str(work / f"out_{way}"))
            results[way]["images_per_s"] = args.images / results[way]["seconds"]
            print(way, results[way], flush=True)
    base = results.get("one_process")
    for result in results.values():
        if base:
            result["time_vs_one_process"] = result["seconds"] / base["seconds"]
    report = {
        "machine": machine_info(),
        "arguments": vars(args),
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    for way, result in results.items():
        ratio = result.get("time_vs_one_process", float("nan"))
        print(
            f"{args.architecture} {args.backbone} {way}: "
            f"{result['images_per_s']:.2f} images/s ({ratio:.2f}x the time "
            f"of one process; {result['steady_images_per_s']:.2f} images/s "
            f"once running), driver {result['driver_peak_mb']} MB, "
            f"workers {result['worker_peak_mb']} MB"
        )
    print(f"CPU flags: {' '.join(report['machine']['cpu_flags'])}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
