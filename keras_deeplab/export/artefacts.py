"""The one export writer, in the layout of `export.layout`.

`export` writes one artefact (atomically, refusing to replace one unless
`overwrite`), `export_all` every format, and `artefact_paths` finds them
again for verification, serving and benchmarks. Every format carries the
model's class names: `assets/labels.txt` in the SavedModel, `labels.txt`
beside the TFLite files, `class_names` in the ONNX metadata.
"""

import functools
import tempfile
from pathlib import Path

from keras_deeplab import __version__
from keras_deeplab.atomic import atomic_write_bytes, atomic_write_text
from keras_deeplab.errors import UserInputError
from keras_deeplab.export.layout import (
    FORMATS,
    LABELS_FILE,
    LEGACY_QUANTIZE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    ONNX_PRECISIONS,
    OPENVINO_FILE,
    SERVING_DIR,
    TFLITE_DIR,
    TFLITE_PRECISIONS,
    size_name,
    tflite_name,
)
from keras_deeplab.export.onnx import export_onnx
from keras_deeplab.export.onnx_int8 import quantize_onnx_int8
from keras_deeplab.export.openvino_ir import export_openvino
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.steps import run as run_step
from keras_deeplab.export.tflite import convert_tflite_variants
from keras_deeplab.export.tflite_metadata import (
    segmenter_metadata,
    with_metadata,
)
from keras_deeplab.image_size import size_text
from keras_deeplab.memory import measured_step
from keras_deeplab.models import class_names
from keras_deeplab.names import check_model_name


def _refuse_existing(path, overwrite):
    if Path(path).exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; choose another --out or pass "
            "--overwrite to replace it."
        )


def labels_text(model) -> str:
    """The model's class names, one a line (line i is class id i)."""
    return "".join(f"{name}\n" for name in class_names(model))


def _precision(quantize):
    """A TFLite/ONNX precision name; the names of releases <= 0.2 too."""
    return LEGACY_QUANTIZE.get(quantize, quantize)


def export(
    model,
    fmt: str,
    out_dir,
    *,
    size=None,
    quantize="fp32",
    representative_images=None,
    io_type="float32",
    argmax=False,
    probabilities=False,
    model_name="deeplab",
    version=1,
    overwrite=False,
) -> Path:
    """Writes one artefact of `model` under `out_dir`; returns its path.

    Args:
        model: segmentation keras.Model (with or without aux head).
        fmt: str. "saved_model", "tflite", "onnx" or "openvino".
        out_dir: str or Path. Export folder (the layout above).
        size: int, (height, width) or None. TFLite: fixed input size (a
            side, or height and width); None: any size.
        quantize: str. TFLite: "fp32", "fp16", "drq_int8" or "int8"; ONNX:
            "fp32" or "int8" ("none" and "dynamic" are the old names of
            fp32 and drq_int8).
        representative_images: int8: float32 (h, w, 3) RGB images.
        io_type: str. TFLite int8 input type.
        argmax: bool. TFLite returns uint8 class ids.
        probabilities: bool. SavedModel: `serving_default` also returns
            float32 class probabilities.
        model_name: str. SavedModel: TF Serving model name (one folder).
        version: int. SavedModel: TF Serving version folder.
        overwrite: bool. Replace an existing artefact.

    Raises:
        UserInputError: for an unknown format or invalid option.
        FileExistsError: if the artefact exists and `overwrite` is False.
    """
    out_dir = Path(out_dir)
    quantize = _precision(quantize)
    if probabilities and fmt != "saved_model":
        raise UserInputError(
            "--probabilities applies to the SavedModel only; TFLite and ONNX "
            "models return logits (or class ids with TFLite --argmax)."
        )
    if fmt == "saved_model":
        return export_saved_model(
            model,
            out_dir / SERVING_DIR,
            model_name=check_model_name(model_name),
            version=version,
            overwrite=overwrite,
            probabilities=probabilities,
            labels=labels_text(model),
        )
    if fmt == "tflite":
        (path,) = _write_tflite(
            model,
            out_dir,
            size=size,
            quantizations=(quantize,),
            representative_images=representative_images,
            io_type=io_type,
            argmax=argmax,
            overwrite=overwrite,
        )
        return path
    if fmt in ("onnx", "openvino") and (io_type != "float32" or argmax):
        raise UserInputError(
            f"--io-type and --argmax apply to TFLite only; an {fmt} model "
            "takes float32 images and returns logits (take the argmax on "
            "the client)."
        )
    if fmt == "openvino":
        return _write_openvino(
            model, out_dir, quantize=quantize, overwrite=overwrite
        )
    if fmt == "onnx":
        return _write_onnx(
            model,
            out_dir,
            quantize=quantize,
            representative_images=representative_images,
            overwrite=overwrite,
        )
    raise UserInputError(
        f"format={fmt!r} is not supported; expected one of {FORMATS}."
    )


def _write_onnx(model, out_dir, *, quantize, representative_images, overwrite):
    if quantize not in ONNX_PRECISIONS:
        raise UserInputError(
            f"quantize={quantize!r} is not supported for ONNX; expected "
            f"one of {ONNX_PRECISIONS}."
        )
    path = out_dir / (ONNX_FILE if quantize == "fp32" else ONNX_INT8_FILE)
    _refuse_existing(path, overwrite)
    metadata = {"class_names": class_names(model)}
    if quantize == "fp32":
        return export_onnx(model, path, metadata=metadata)
    if representative_images is None:
        raise UserInputError(
            "ONNX int8 calibrates activations on training images; pass "
            "--config CONFIG."
        )
    with tempfile.TemporaryDirectory() as directory:
        source = export_onnx(
            model, Path(directory) / "fp32.onnx", metadata=metadata
        )
        return quantize_onnx_int8(
            source, path, representative_images=representative_images
        )


def _write_openvino(model, out_dir, *, quantize="fp32", overwrite):
    if quantize != "fp32":
        raise UserInputError(
            f"quantize={quantize!r} is not supported for OpenVINO; it exports "
            "fp32 (OpenVINO picks its own inference precision per device)."
        )
    path = out_dir / OPENVINO_FILE
    _refuse_existing(path, overwrite)
    return export_openvino(model, path, class_names=class_names(model))


def _tflite_paths(out_dir, *, size, quantizations, io_type, argmax) -> dict:
    return {
        quantize: Path(out_dir)
        / TFLITE_DIR
        / tflite_name(
            precision=quantize,
            size=size,
            io_type=io_type if quantize == "int8" else "float32",
            argmax=argmax,
        )
        for quantize in quantizations
    }


def _write_tflite(
    model,
    out_dir,
    *,
    size,
    quantizations,
    representative_images,
    io_type="float32",
    argmax=False,
    overwrite=False,
):
    """TFLite files of one input size, one per precision, each carrying
    MediaPipe/LiteRT metadata and the class names, and the labels file
    beside them; returns their paths."""
    paths = _tflite_paths(
        out_dir,
        size=size,
        quantizations=quantizations,
        io_type=io_type,
        argmax=argmax,
    )
    for path in paths.values():
        _refuse_existing(path, overwrite)
    flatbuffers = convert_tflite_variants(
        model,
        size=size,
        quantizations=quantizations,
        representative_images=representative_images,
        io_type=io_type,
        argmax=argmax,
    )
    for quantize, path in paths.items():
        _write_tflite_file(
            model,
            path,
            flatbuffers[quantize],
            float_input=quantize != "int8" or io_type == "float32",
            argmax=argmax,
        )
    return list(paths.values())


def _write_tflite_file(model, path, flatbuffer, *, float_input, argmax):
    """One converted flatbuffer with MediaPipe/LiteRT metadata and the
    class names, and the labels file beside it."""
    labels = labels_text(model)
    atomic_write_text(Path(path).parent / LABELS_FILE, labels)
    metadata = segmenter_metadata(
        model_name=model.name,
        description=_description(model),
        labels_file=LABELS_FILE,
        float_input=float_input,
        float_output=not argmax,
        version=f"keras_deeplab {__version__}",
    )
    atomic_write_bytes(
        path,
        with_metadata(flatbuffer, metadata, {LABELS_FILE: labels.encode()}),
    )


def _description(model) -> str:
    names = class_names(model)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"Semantic segmentation into {len(names)} classes ({shown})."


# Models this large run each step of `export_all` in a process of its own
# (export.steps): DeepLabV3-ResNet-50 (42 M parameters) peaked at 7.5 GB in
# one process. Below it a fresh process's start (importing TensorFlow: ~10 s
# a step on a 2-core machine) costs more time than the memory is worth.
SEPARATE_PROCESSES_FROM_PARAMS = 20_000_000


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
    """SavedModel, TFLite (every precision at `size`, plus fp32 at any
    size), ONNX (fp32 and QDQ int8) and OpenVINO IR (fp32); returns
    {name: path}, named as `artefact_paths` names them.

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
    out_dir = Path(out_dir)
    if representative_images is None:
        raise UserInputError(
            "int8 TFLite and ONNX calibrate activations on training images; "
            "pass representative_images (export --config CONFIG)."
        )
    if separate_processes is None:
        separate_processes = (
            model.count_params() >= SEPARATE_PROCESSES_FROM_PARAMS
        )
    tflite_paths = {
        (side, quantize): path
        for side, precisions in ((size, TFLITE_PRECISIONS), (None, ("fp32",)))
        for quantize, path in _tflite_paths(
            out_dir,
            size=side,
            quantizations=precisions,
            io_type="float32",
            argmax=False,
        ).items()
    }
    serving = out_dir / SERVING_DIR / check_model_name(model_name)
    onnx_path, onnx_int8_path, xml_path = (
        out_dir / ONNX_FILE,
        out_dir / ONNX_INT8_FILE,
        out_dir / OPENVINO_FILE,
    )
    for path in (
        serving / str(version),
        *tflite_paths.values(),
        onnx_path,
        onnx_int8_path,
        xml_path,
    ):
        _refuse_existing(path, overwrite)
    with tempfile.TemporaryDirectory(prefix="keras_deeplab_export_") as work:
        run = _StepRunner(model, Path(work), separate=separate_processes)

        def step(name, **kwargs):
            """A plan entry: one step that writes one artefact."""
            return lambda: Path(run(name, **kwargs))

        def tflite(size, quantize, path):
            directory = Path(work) / f"tflite_{size_name(size)}"
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
                flatbuffer_path=str(Path(work) / path.name),
                quantize=quantize,
                images=representative_images if quantize == "int8" else None,
            )
            _write_tflite_file(
                model,
                path,
                Path(flatbuffer).read_bytes(),
                float_input=True,
                argmax=False,
            )
            return path

        names = list(class_names(model))
        plan = [
            (
                f"saved_model v{version}",
                step(
                    "saved_model",
                    model=run.model_source,
                    out_dir=str(out_dir / SERVING_DIR),
                    model_name=model_name,
                    version=version,
                    overwrite=overwrite,
                    probabilities=probabilities,
                    labels=labels_text(model),
                ),
            ),
            *(
                (
                    f"tflite {quantize} at "
                    + (size_text(size) if size else "any size"),
                    functools.partial(tflite, size, quantize, path),
                )
                for (size, quantize), path in tflite_paths.items()
            ),
            (
                "onnx fp32",
                step(
                    "onnx",
                    model=run.model_source,
                    path=str(onnx_path),
                    metadata={"class_names": names},
                ),
            ),
            (
                "openvino fp32 (from the ONNX file)",
                step(
                    "openvino",
                    onnx_path=str(onnx_path),
                    xml_path=str(xml_path),
                    class_names=names,
                ),
            ),
            (
                "onnx int8 (from the ONNX file)",
                step(
                    "onnx_int8",
                    source=str(onnx_path),
                    path=str(onnx_int8_path),
                    images=representative_images,
                ),
            ),
        ]
        written = []
        for description, write in plan:
            if log:
                log(f"writing {description} ...")
            with measured_step() as cost:
                written.append(write())
            if log:
                log(f"  {written[-1]} ({_cost_text(cost, run.take_peak_mb())})")
    return {_artefact_name(path): path for path in written}


class _StepRunner:
    """Runs `export.steps` for one model, here or each in a fresh process
    (the model saved once to a `.keras` file for them), and keeps the
    highest peak memory of the processes run since it was last taken."""

    def __init__(self, model, work, *, separate):
        self.separate = separate
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


def _artefact_name(path) -> str:
    path = Path(path)
    if path.suffix == ".tflite":
        return path.stem
    if path.suffix in (".onnx", ".xml"):
        return path.name
    return f"saved_model v{path.name}"


def artefact_paths(out_dir) -> dict:
    """{name: path} of every SavedModel, TFLite and ONNX file in a folder.

    Names: "saved_model v<version>", the TFLite file stem (files of
    releases <= 0.2, e.g. deeplab_none_dynamic, are found too),
    "deeplab.onnx".

    Raises:
        UserInputError: if there is none.
    """
    out_dir = Path(out_dir)
    paths = {
        _artefact_name(p.parent): p.parent
        for p in sorted(out_dir.glob(f"{SERVING_DIR}/*/*/saved_model.pb"))
    }
    paths.update(
        {p.stem: p for p in sorted(out_dir.glob(f"{TFLITE_DIR}/*.tflite"))}
    )
    for file in (ONNX_FILE, ONNX_INT8_FILE, OPENVINO_FILE):
        if (out_dir / file).is_file():
            paths[file.name] = out_dir / file
    if not paths:
        raise UserInputError(
            f"no exported model under {str(out_dir)!r}; expected serving/, "
            "tflite/, onnx/ or openvino/ from `keras-deeplab export`."
        )
    return paths


def disk_size_mb(path) -> float:
    """Size of a file (with its weights beside it, for an OpenVINO .xml),
    or of every file under a folder, in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
