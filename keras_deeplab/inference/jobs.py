"""A segmentation job over many files, whichever engine runs it (Beam, Ray).

What is decided here, once for every engine: which input writes which
outputs (`JobInput`, `output_uris`), whether an input is done already, how
an input is read and checked before the model sees it (`prepare`), how the
outputs are written (`write_outputs`: each file under a temporary name,
then renamed, so a killed worker or a retried bundle never leaves a partial
file), and the manifest lines every input ends as.

Outputs of an input `<root>/a/b/x.jpg` are `<out>/a/b/x_mask.png` (the
file single-process `predict` writes) and, with confidence,
`<out>/a/b/x_confidence.png`: the path under the job's root is kept, so two
`x.jpg` in different folders never overwrite each other. The root is the
deepest folder that holds every input argument (a pattern's folder before
its first wildcard, a file's folder), known before any file is listed.

Files are reached through a `files` object (`LocalFiles` here; Beam's
`FileSystems` in `engines.beam` for `gs://`, `s3://`, ...).
"""

import dataclasses
import glob
import json
import os
import posixpath
import uuid

from keras_deeplab.data.sources import DataError, decode_image
from keras_deeplab.inference.batch import InferenceOptions, oversized
from keras_deeplab.inference.predict import CONFIDENCE_SUFFIX, MASK_SUFFIX
from keras_deeplab.utils.atomic import atomic_write_bytes, atomic_write_text
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import counted

MANIFEST = "manifest.jsonl"
FAILED = "failed.jsonl"
_WILDCARDS = set("*?[")
_PARTIAL = ".partial"


def has_scheme(uri) -> bool:
    """True for `gs://...`, `s3://...`: object-store paths (Beam's)."""
    return "://" in str(uri)


def _join(base, relative) -> str:
    if has_scheme(base):
        return f"{str(base).rstrip('/')}/{relative}"
    return os.path.join(base, *relative.split("/"))


def _dirname(uri) -> str:
    return posixpath.dirname(uri) if has_scheme(uri) else os.path.dirname(uri)


def absolute(uri) -> str:
    return str(uri) if has_scheme(uri) else os.path.abspath(uri)


def is_pattern(text) -> bool:
    return bool(_WILDCARDS & set(str(text)))


def _fixed_folder(argument) -> str:
    """The folder an input argument's files are all under: a pattern's
    part before its first wildcard, a file's folder."""
    parts = argument.split("/")
    fixed = next(
        (i for i, part in enumerate(parts) if is_pattern(part)), len(parts)
    )
    if fixed == len(parts):
        return _dirname(argument)
    return "/".join(parts[:fixed]) or "/"


def job_root(arguments) -> str:
    """The deepest folder holding every input argument (files, patterns).

    Raises:
        UserInputError: if the inputs mix file systems (local and `gs://`).
    """
    folders = [_fixed_folder(absolute(a)) for a in arguments]
    schemes = {f.partition("://")[0] if has_scheme(f) else "" for f in folders}
    if len(schemes) > 1:
        raise UserInputError(
            f"the inputs mix file systems ({', '.join(sorted(schemes))}); "
            "run one job per file system."
        )
    if not has_scheme(folders[0]):
        return os.path.commonpath(folders)
    scheme = folders[0].partition("://")[0]
    paths = [f.partition("://")[2] for f in folders]
    return f"{scheme}://{posixpath.commonpath(paths)}"


@dataclasses.dataclass(frozen=True, order=True)
class JobInput:
    """One input file: its URI, and its path under the job's root."""

    uri: str
    relative: str  # "/"-separated


def job_input(uri, root) -> JobInput:
    uri = absolute(uri)
    if has_scheme(uri):
        relative = posixpath.relpath(
            uri.partition("://")[2], root.partition("://")[2]
        )
    else:
        relative = os.path.relpath(uri, root).replace(os.sep, "/")
    return JobInput(uri, relative)


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """Everything a worker needs: picklable, shipped to every worker."""

    model: str  # .keras file, preset name, or a SavedModel folder
    out: str  # folder or URI
    root: str  # `job_root` of the inputs
    options: InferenceOptions = InferenceOptions()
    config: object = None  # DeepLabConfig, for .weights.h5 files
    precision: str = "float32"
    overwrite: bool = False


def output_uris(settings: JobSettings, item: JobInput) -> list:
    """The outputs `item` writes: its mask [and confidence] PNG."""
    stem = posixpath.splitext(item.relative)[0]
    suffixes = [MASK_SUFFIX]
    suffixes += [CONFIDENCE_SUFFIX] if settings.options.confidence else []
    return [_join(settings.out, stem + suffix) for suffix in suffixes]


class LocalFiles:
    """Local (or mounted: NFS, gcsfuse) files, written atomically."""

    def exists(self, uri) -> bool:
        return os.path.isfile(uri)

    def read(self, uri) -> bytes:
        with open(uri, "rb") as handle:
            return handle.read()

    def write(self, uri, data: bytes):
        atomic_write_bytes(uri, data)

    def write_text(self, uri, text: str):
        atomic_write_text(uri, text)

    def delete(self, uri):
        os.unlink(uri)

    def match(self, pattern) -> list:
        return sorted(
            path
            for path in glob.glob(pattern, recursive=True)
            if os.path.isfile(path)
        )

    def remove_partials(self, out):
        """Deletes temporaries a killed run left under `out`."""
        pattern = os.path.join(out, "**", f"*{_PARTIAL}*")
        for path in glob.glob(pattern, recursive=True, include_hidden=True):
            os.unlink(path)


def temporary_uri(uri) -> str:
    """A unique sibling name that `remove_partials` recognises."""
    folder = _dirname(uri)
    name = uri[len(folder) :].lstrip("/")
    return _join(folder, f".{name}.{uuid.uuid4().hex}{_PARTIAL}")


def expand_inputs(arguments, files) -> list:
    """JobInputs of files and patterns (`**` crosses folders), sorted,
    each file once.

    Raises:
        UserInputError: naming a pattern that matches no file.
    """
    root = job_root(arguments)
    uris = {absolute(uri) for a in arguments for uri in files_of(a, files)}
    return sorted(job_input(uri, root) for uri in uris)


def files_of(argument, files) -> list:
    """A file argument as it is (a missing file fails on reading), or a
    pattern's matches.

    Raises:
        UserInputError: naming a pattern that matches no file.
    """
    if not is_pattern(argument):
        return [argument]
    matches = files.match(argument)
    if not matches:
        raise UserInputError(f"{argument!r} matches no file.")
    return matches


def done_record(settings, item, files):
    """The manifest line of an input whose outputs all exist (a rerun
    skips it), else None. Writes are atomic, so a file that exists is
    complete."""
    if settings.overwrite:
        return None
    outputs = output_uris(settings, item)
    if all(files.exists(uri) for uri in outputs):
        return {"input": item.uri, "outputs": outputs, "skipped": True}
    return None


def failed_record(item, error) -> dict:
    return {"input": item.uri, "error": str(error)}


def prepare(settings, item, files, image=None):
    """(record, None) for an input that is done or unusable, else (None,
    uint8 image): what happens to each input before the model. `image`:
    the input already decoded (Ray's `read_images`), else it is read."""
    record = done_record(settings, item, files)
    if record is not None:
        return record, None
    try:
        if image is None:
            image = decode_image(files.read(item.uri), item.uri)
    except (DataError, OSError) as err:
        return failed_record(item, err), None
    reason = oversized(image, settings.options)
    if reason is not None:
        return failed_record(item, f"image {item.uri!r}: {reason}"), None
    return None, image


def write_outputs(settings, item, segmented, files) -> dict:
    """Writes one input's PNGs (each atomically) and returns its line."""
    outputs = output_uris(settings, item)
    contents = [segmented.mask_png]
    contents += (
        [segmented.confidence_png] if settings.options.confidence else []
    )
    for uri, data in zip(outputs, contents, strict=True):
        files.write(uri, data)
    return {
        "input": item.uri,
        "outputs": outputs,
        "size": list(segmented.size),
        "seconds": round(segmented.seconds, 4),
        "pixels_per_class": {
            str(c): n for c, n in segmented.pixels_per_class.items()
        },
    }


@dataclasses.dataclass(frozen=True)
class JobSummary:
    written: int
    skipped: int
    failed: int

    @property
    def line(self) -> str:
        total = self.written + self.skipped + self.failed
        return (
            f"{counted(total, 'image')}: "
            f"{self.written} written, {self.skipped} skipped (done before), "
            f"{self.failed} failed"
            + (f" (see {FAILED})" if self.failed else "")
        )


def write_manifest(out, records, files) -> JobSummary:
    """`manifest.jsonl` (every input of this run, sorted) and, if any
    input failed, `failed.jsonl` (the failures), each written atomically."""
    records = sorted(records, key=lambda record: record["input"])
    failed = [r for r in records if "error" in r]
    skipped = sum(1 for r in records if r.get("skipped"))

    def lines(rows):
        return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)

    files.write_text(_join(out, MANIFEST), lines(records))
    # Only when something failed: a stale list from an earlier run goes
    # (and Beam's S3 upload refuses an empty object).
    failed_uri = _join(out, FAILED)
    if failed:
        files.write_text(failed_uri, lines(failed))
    elif files.exists(failed_uri):
        files.delete(failed_uri)
    return JobSummary(
        len(records) - len(failed) - skipped, skipped, len(failed)
    )


def load_job_model(settings: JobSettings):
    """The model a worker runs: a Keras model (`.keras`, preset,
    `.weights.h5` + config), or a SavedModel export's `logits` signature."""
    if is_saved_model(settings.model):
        from keras_deeplab.inference import saved_model_logits

        return saved_model_logits.SavedModelLogits(settings.model)
    from keras_deeplab.loading import load_trained_model
    from keras_deeplab.models.derived import with_precision

    model = load_trained_model(settings.model, settings.config)
    return with_precision(model, settings.precision)


def is_saved_model(source) -> bool:
    return os.path.isfile(os.path.join(str(source), "saved_model.pb"))
