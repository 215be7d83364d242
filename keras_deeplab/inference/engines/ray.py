"""Ray Data: a callable class for `Dataset.map_batches`, and a ready job.

`SegmentBatches` loads the model once per actor (in `__init__`) and takes
batches of `path` (a list of files, or `ray.data.read_images(...,
include_paths=True)`, whose decoded `image` column it then uses). Each batch
writes its PNGs where it runs (atomically) and returns only the manifest
lines, so no image or probability map is held in Ray's object store: the
memory failure users meet with full-size float outputs in flight cannot
happen.

Workers read and write through local paths: a shared or mounted file
system (NFS, gcsfuse, a cluster's shared disk) on a multi-node cluster.
Object-store paths (`gs://`, `s3://`) are Beam's (`engines.beam`).
"""

import json
import logging
import os

import numpy as np
import ray
import ray.data

from keras_deeplab.inference import jobs
from keras_deeplab.inference.batch import segment_images
from keras_deeplab.utils.errors import UserInputError

BATCH_SIZE = 8


class SegmentBatches:
    """`map_batches` callable: {"path"[, "image"]} -> {"record": JSON}.

    Args:
        settings: `jobs.JobSettings`.
    """

    def __init__(self, settings):
        self._settings = settings
        self._files = jobs.LocalFiles()
        self._model = jobs.load_job_model(settings)

    def __call__(self, batch: dict) -> dict:
        images = batch.get("image")
        records, todo = [], []
        for index, path in enumerate(batch["path"]):
            item = jobs.job_input(str(path), self._settings.root)
            given = None if images is None else np.asarray(images[index])
            record, image = jobs.prepare(
                self._settings, item, self._files, image=given
            )
            if record is None:
                todo.append((item, image))
            else:
                records.append(record)
        for result in segment_images(self._model, todo, self._settings.options):
            records.append(
                jobs.write_outputs(
                    self._settings, result.key, result, self._files
                )
            )
        return {"record": np.array([json.dumps(r) for r in records], object)}


def _init_kwargs(engine_options):
    """`ray.init` arguments: `address=...` joins a cluster; otherwise a
    local one with `num_cpus` (default: every core)."""
    known = {"address", "num_cpus", "workers", "batch_size"}
    unknown = set(engine_options) - known
    if unknown:
        raise UserInputError(
            f"--engine-option {', '.join(sorted(unknown))} is not a Ray "
            f"option this job takes; expected {', '.join(sorted(known))}."
        )
    if "address" in engine_options:
        return {"address": engine_options["address"]}
    cpus = int(engine_options.get("num_cpus", os.cpu_count() or 1))
    return {"num_cpus": cpus, "include_dashboard": False}


def segment_with_ray(arguments, settings, engine_options=None):
    """Runs the job on Ray Data and writes the manifest; returns its
    `jobs.JobSummary`.

    Args:
        arguments: local input files and patterns (`'imgs/**/*.jpg'`).
        settings: `jobs.JobSettings`.
        engine_options: {str: str}: `address` (a running cluster, e.g.
            `ray://head:10001` or `auto`), else `num_cpus` of a local one;
            `workers` (actors, default one per CPU), `batch_size`.

    Raises:
        UserInputError: for object-store paths or unknown options.
    """
    engine_options = dict(engine_options or {})
    remote = [a for a in [*arguments, settings.out] if jobs.has_scheme(a)]
    if remote:
        raise UserInputError(
            f"{remote[0]!r}: the Ray engine reads and writes local or "
            "mounted paths; use --engine beam for object stores."
        )
    init = _init_kwargs(engine_options)
    files = jobs.LocalFiles()
    inputs = jobs.expand_inputs(arguments, files)
    files.remove_partials(settings.out)
    started = not ray.is_initialized()
    if started:
        ray.init(**init, log_to_driver=False, logging_level=logging.WARNING)
    try:
        workers = int(
            engine_options.get("workers", ray.cluster_resources()["CPU"])
        )
        dataset = ray.data.from_items([{"path": i.uri} for i in inputs])
        dataset = dataset.map_batches(
            SegmentBatches,
            fn_constructor_kwargs={"settings": settings},
            batch_size=int(engine_options.get("batch_size", BATCH_SIZE)),
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=1,
        )
        records = [json.loads(row["record"]) for row in dataset.iter_rows()]
    finally:
        if started:
            ray.shutdown()
    return jobs.write_manifest(settings.out, records, files)
