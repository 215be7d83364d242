"""`export_all`: every format of one model, as a plan of named steps.

SavedModel, TFLite (every precision at the export size, plus fp32 at any
size), ONNX (fp32 and QDQ int8) and OpenVINO IR, in the layout of
`export.layout`, each written by a step of `export.steps` (in this process,
or for large models each in a fresh one so the steps' peaks do not add
up), logged with its time and peak memory.
"""

import dataclasses
import tempfile
from pathlib import Path

from keras_deeplab.export.artefacts import (
    artefact_name,
    labels_text,
    refuse_existing,
    tflite_paths,
    write_tflite_file,
)
from keras_deeplab.export.layout import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    OPENVINO_FILE,
    SERVING_DIR,
    TFLITE_PRECISIONS,
    size_name,
)
from keras_deeplab.export.steps import run as run_step
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import size_text
from keras_deeplab.utils.memory import measured_step
from keras_deeplab.utils.names import check_model_name

# Models this large run each step of `export_all` in a process of its own
# (export.steps): DeepLabV3-ResNet-50 (42 M parameters) peaked at 7.5 GB in
# one process. Below it a fresh process's start (importing TensorFlow: ~10 s
# a step on a 2-core machine) costs more time than the memory is worth.
SEPARATE_PROCESSES_FROM_PARAMS = 20_000_000


@dataclasses.dataclass(frozen=True)
class _Targets:
    """Where each artefact of one `export_all` goes."""

    serving: Path  # the model's folder; the version folder inside it
    version: int
    tflite: dict  # {(size or None, precision): path}
    onnx: Path
    onnx_int8: Path
    openvino: Path

    @classmethod
    def of(cls, out_dir, *, size, model_name, version):
        tflite = {
            (side, quantize): path
            for side, precisions in (
                (size, TFLITE_PRECISIONS),
                (None, ("fp32",)),
            )
            for quantize, path in tflite_paths(
                out_dir,
                size=side,
                quantizations=precisions,
                io_type="float32",
                argmax=False,
            ).items()
        }
        return cls(
            serving=out_dir / SERVING_DIR / check_model_name(model_name),
            version=version,
            tflite=tflite,
            onnx=out_dir / ONNX_FILE,
            onnx_int8=out_dir / ONNX_INT8_FILE,
            openvino=out_dir / OPENVINO_FILE,
        )

    def paths(self):
        return (
            self.serving / str(self.version),
            *self.tflite.values(),
            self.onnx,
            self.onnx_int8,
            self.openvino,
        )


def export_all(
    model,
    out_dir,
    *,
    size,
    representative_images,
    model_name="deeplab",
    version=1,
    overwrite=False,
    probabilities=False,
    separate_processes=None,
    log=None,
) -> dict:
    """Every artefact of `model` under `out_dir`; returns {name: path},
    named as `artefact_paths` names them.

    Args:
        separate_processes: bool or None. Run each step in a fresh Python
            process (the model goes to it as a `.keras` file), so the
            steps' peaks do not add up; None: for models of
            `SEPARATE_PROCESSES_FROM_PARAMS` parameters or more.
        log: callable or None. Called with one line per artefact written,
            with its time and peak resident memory (the CLI prints them).

    Raises:
        FileExistsError: if any artefact exists and `overwrite` is False
            (checked before anything is written).
        UserInputError: without `representative_images`.
    """
    if representative_images is None:
        raise UserInputError(
            "int8 TFLite and ONNX calibrate activations on training images; "
            "pass representative_images (export --config CONFIG)."
        )
    targets = _Targets.of(
        Path(out_dir), size=size, model_name=model_name, version=version
    )
    for path in targets.paths():
        refuse_existing(path, overwrite)
    if separate_processes is None:
        separate_processes = (
            model.count_params() >= SEPARATE_PROCESSES_FROM_PARAMS
        )
    with tempfile.TemporaryDirectory(prefix="keras_deeplab_export_") as work:
        run = _StepRunner(model, Path(work), separate=separate_processes)
        plan = _plan(
            model,
            run,
            targets,
            images=representative_images,
            overwrite=overwrite,
            probabilities=probabilities,
        )
        written = [
            _logged(run, description, write, log) for description, write in plan
        ]
    return {artefact_name(path): path for path in written}


def _plan(model, run, targets, *, images, overwrite, probabilities):
    """[(description, fn() -> the path it writes)], in the order they run
    (OpenVINO and ONNX int8 start from the fp32 ONNX file)."""
    names = list(class_names(model))
    saved_model = {
        "model": run.model_source,
        "out_dir": str(targets.serving.parent),
        "model_name": targets.serving.name,
        "version": targets.version,
        "overwrite": overwrite,
        "probabilities": probabilities,
        "labels": labels_text(model),
    }
    onnx = {"model": run.model_source, "path": str(targets.onnx)}
    openvino = {
        "onnx_path": str(targets.onnx),
        "xml_path": str(targets.openvino),
        "class_names": names,
    }
    onnx_int8 = {
        "source": str(targets.onnx),
        "path": str(targets.onnx_int8),
        "images": images,
    }
    return [
        (
            f"saved_model v{targets.version}",
            run.step("saved_model", saved_model),
        ),
        *(
            (
                f"tflite {quantize} at {_size_label(size)}",
                lambda size=size, quantize=quantize, path=path: _tflite(
                    model, run, size, quantize, path, images=images
                ),
            )
            for (size, quantize), path in targets.tflite.items()
        ),
        (
            "onnx fp32",
            run.step("onnx", {**onnx, "metadata": {"class_names": names}}),
        ),
        ("openvino fp32 (from the ONNX file)", run.step("openvino", openvino)),
        ("onnx int8 (from the ONNX file)", run.step("onnx_int8", onnx_int8)),
    ]


def _size_label(size) -> str:
    return size_text(size) if size else "any size"


def _tflite(model, run, size, quantize, path, *, images):
    """One TFLite file: the converter input of its size (made once per
    size), its conversion, and the file with metadata and labels."""
    directory = run.work / f"tflite_{size_name(size)}"
    if not directory.exists():
        run(
            "tflite_input",
            model=run.model_source,
            directory=str(directory),
            size=size,
            argmax=False,
        )
    flatbuffer = run(
        "tflite",
        directory=str(directory),
        flatbuffer_path=str(run.work / path.name),
        quantize=quantize,
        images=images if quantize == "int8" else None,
    )
    write_tflite_file(
        model,
        path,
        Path(flatbuffer).read_bytes(),
        float_input=True,
        argmax=False,
        fixed_size=size is not None,
    )
    return path


def _logged(run, description, write, log):
    """Runs one plan entry, logging it with its time and peak memory."""
    if log:
        log(f"writing {description} ...")
    with measured_step() as cost:
        path = write()
    if log:
        log(f"  {path} ({_cost_text(cost, run.take_peak_mb())})")
    return path


class _StepRunner:
    """Runs `export.steps` for one model, here or each in a fresh process
    (the model saved once to a `.keras` file for them), and keeps the
    highest peak memory of the processes run since it was last taken."""

    def __init__(self, model, work, *, separate):
        self.separate, self.work = separate, work
        self.model_source = model
        if separate:
            self.model_source = str(work / "model.keras")
            model.save(self.model_source)
        self._peak_mb = None

    def __call__(self, step, **kwargs):
        result, peak_mb = run_step(
            step, separate_process=self.separate, **kwargs
        )
        if peak_mb is not None:
            self._peak_mb = max(self._peak_mb or 0, peak_mb)
        return result

    def step(self, name, arguments):
        """A plan entry: fn() running step `name`, returning its path."""
        return lambda: Path(self(name, **arguments))

    def take_peak_mb(self):
        peak_mb, self._peak_mb = self._peak_mb, None
        return peak_mb


def _cost_text(cost, child_peak_mb) -> str:
    text = f"{cost['seconds']:.1f} s"
    if cost["peak_mb"] is None:
        return text
    if child_peak_mb is None:
        return f"{text}, peak memory {cost['peak_mb'] / 1024:.1f} GB"
    return (
        f"{text}, peak memory {child_peak_mb / 1024:.1f} GB in its own "
        f"process + {cost['peak_mb'] / 1024:.1f} GB in this one"
    )
