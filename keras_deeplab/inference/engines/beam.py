"""Apache Beam: our models in `RunInference`, and a ready pipeline.

`SegmentationModelHandler` is a Beam `ModelHandler` that loads a `.keras`
file or preset with Keras 3 (`import keras_deeplab` registers the layers;
safe mode) or a SavedModel export through `tf.saved_model.load`; Beam's own
TensorFlow handler cannot load either (apache/beam#30616). A batch may mix
image sizes: `inference.batch` runs each size as its own model call, and
where the installed Beam buckets by length, images are batched with others
of a similar pixel count. Wrapped in `KeyedModelHandler`, the file names
travel with the images.

`segment_with_beam` is the pipeline: list the inputs (any file system
Beam's `FileSystems` knows: local, `gs://`, `s3://`), read and check each
in a worker (done ones are skipped, unreadable or oversized ones become
`failed.jsonl` lines instead of failing the job), infer, write the PNGs
atomically (temporary name, then `FileSystems.rename`), and write the
manifest.
"""

import inspect
import json
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions

from keras_deeplab.inference import jobs
from keras_deeplab.inference.batch import segment_images
from keras_deeplab.utils.errors import UserInputError

# Images are batched with others of a similar pixel count (Beam >= 2.69
# buckets by `length_fn`); up to 8 per model call.
MAX_BATCH_SIZE = 8
_PIXEL_BUCKETS = [128 * 128, 256 * 256, 512 * 512, 1024 * 1024, 2048 * 2048]
_SKIPPED_OR_FAILED = "skipped_or_failed"
_RECORDS_FOLDER = ".records"


class BeamFiles:
    """`jobs.LocalFiles` for every file system Beam knows."""

    _RAW = CompressionTypes.UNCOMPRESSED  # never gunzip an image by name

    def exists(self, uri) -> bool:
        return FileSystems.exists(uri)

    def read(self, uri) -> bytes:
        with FileSystems.open(uri, compression_type=self._RAW) as handle:
            return handle.read()

    def write(self, uri, data: bytes):
        # Object stores show an object only once its upload completes, and
        # a local rename is atomic: readers never see half a file.
        temporary = jobs.temporary_uri(uri)
        with FileSystems.create(temporary, compression_type=self._RAW) as f:
            f.write(data)
        FileSystems.rename([temporary], [uri])

    def write_text(self, uri, text: str):
        self.write(uri, text.encode("utf-8"))

    def delete(self, uri):
        FileSystems.delete([uri])

    def match(self, pattern) -> list:
        (result,) = FileSystems.match([pattern])
        return sorted(m.path for m in result.metadata_list)

    def remove_partials(self, out):
        partials = self.match(FileSystems.join(out, "**", "*.partial"))
        if partials:
            FileSystems.delete(partials)


def _pixels(image) -> int:
    return int(image.shape[0]) * int(image.shape[1])


class SegmentationModelHandler(ModelHandler):
    """RunInference handler: uint8 (h, w, 3) images in, `batch.Segmented`
    (PNG bytes, pixels per class) out; wrap it in `KeyedModelHandler`.

    Args:
        settings: `jobs.JobSettings` (model, options; `out` unused here).
        max_batch_size: images per model call at most.
    """

    def __init__(self, settings, *, max_batch_size=MAX_BATCH_SIZE):
        self._settings = settings
        self._batching = {"min_batch_size": 1, "max_batch_size": max_batch_size}
        accepted = inspect.signature(beam.BatchElements).parameters
        if "length_fn" in accepted and "bucket_boundaries" in accepted:
            self._batching.update(
                length_fn=_pixels, bucket_boundaries=_PIXEL_BUCKETS
            )

    def load_model(self):
        return jobs.load_job_model(self._settings)

    def run_inference(self, batch, model, inference_args=None):
        segmented = segment_images(
            model, enumerate(batch), self._settings.options
        )
        return [PredictionResult(None, result) for result in segmented]

    def get_num_bytes(self, batch) -> int:
        return sum(image.nbytes for image in batch)

    def get_metrics_namespace(self) -> str:
        return "keras_deeplab"

    def batch_elements_kwargs(self):
        return dict(self._batching)


def _files_of(argument) -> list:
    """The files an input argument names: itself, or a pattern's matches
    (listed in a worker, so a driver never holds a million names)."""
    return jobs.files_of(argument, BeamFiles())


class _Read(beam.DoFn):
    """(JobInput, image) for inputs to segment; manifest lines (tagged)
    for inputs that are done or cannot be used."""

    def __init__(self, settings):
        self._settings = settings

    def setup(self):
        self._files = BeamFiles()

    def process(self, item):
        record, image = jobs.prepare(self._settings, item, self._files)
        if record is not None:
            yield beam.pvalue.TaggedOutput(_SKIPPED_OR_FAILED, record)
        else:
            yield item, image


def _write(keyed, settings):
    item, result = keyed
    return jobs.write_outputs(settings, item, result.inference, BeamFiles())


def build_pipeline(pipeline, arguments, settings, records_prefix):
    """Adds the job to `pipeline`; its manifest lines go to text shards
    `records_prefix*.jsonl`."""
    items = (
        pipeline
        | "Inputs" >> beam.Create(list(arguments))
        | "List" >> beam.FlatMap(_files_of)
        | "Once" >> beam.Distinct()
        | "Key" >> beam.Map(jobs.job_input, settings.root)
        | "Spread" >> beam.Reshuffle()
    )
    read = items | "Read" >> beam.ParDo(_Read(settings)).with_outputs(
        _SKIPPED_OR_FAILED, main="images"
    )
    written = (
        read.images
        | "Segment"
        >> RunInference(KeyedModelHandler(SegmentationModelHandler(settings)))
        | "Write" >> beam.Map(_write, settings)
    )
    _ = (
        (written, read[_SKIPPED_OR_FAILED])
        | "Records" >> beam.Flatten()
        | "Lines" >> beam.Map(json.dumps, sort_keys=True)
        | "Manifest"
        >> beam.io.WriteToText(records_prefix, file_name_suffix=".jsonl")
    )


def pipeline_options(engine_options: dict) -> PipelineOptions:
    """Beam's options from `--engine-option KEY=VALUE`; without a runner,
    the DirectRunner with one worker process per core."""
    import os

    options = dict(engine_options)
    if options.get("runner", "DirectRunner") == "DirectRunner":
        options.setdefault("direct_running_mode", "multi_processing")
        options.setdefault("direct_num_workers", str(os.cpu_count() or 1))
    flags = {}
    for key, value in options.items():
        if value.lower() == "true":
            flags[key] = True
        elif value.lower() != "false":
            flags[key] = value
    return PipelineOptions.from_dictionary(flags)


def _check_patterns(arguments):
    for argument in arguments:
        if jobs.is_pattern(argument):
            (result,) = FileSystems.match([argument], limits=[1])
            if not result.metadata_list:
                raise UserInputError(f"{argument!r} matches no file.")


def segment_with_beam(arguments, settings, engine_options=None):
    """Runs the job on Beam and writes the manifest; returns its
    `jobs.JobSummary`.

    Args:
        arguments: input files and patterns (`'imgs/**/*.jpg'`,
            `'gs://bucket/*.png'`).
        settings: `jobs.JobSettings`.
        engine_options: {str: str} Beam pipeline options (`runner`,
            `project`, `direct_num_workers`, ...).

    Raises:
        UserInputError: if a pattern matches no file.
    """
    options = pipeline_options(engine_options or {})
    # The driver's own reads and writes (listing, the manifest) use the
    # job's file system options too (an S3 endpoint, credentials).
    FileSystems.set_options(options)
    files = BeamFiles()
    _check_patterns(arguments)
    files.remove_partials(settings.out)
    records_prefix = FileSystems.join(
        settings.out, _RECORDS_FOLDER, f"run-{uuid.uuid4().hex}"
    )
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, arguments, settings, records_prefix)
    shards = files.match(records_prefix + "*")
    records = [
        json.loads(line)
        for shard in shards
        for line in files.read(shard).decode("utf-8").splitlines()
        if line
    ]
    summary = jobs.write_manifest(settings.out, records, files)
    FileSystems.delete(shards)
    folder = FileSystems.join(settings.out, _RECORDS_FOLDER)
    if FileSystems.exists(folder):  # a local folder; prefixes on stores
        FileSystems.delete([folder])
    return summary
