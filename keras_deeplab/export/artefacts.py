"""The one export writer, in the layout of `export.layout`.

`export` writes one artefact (atomically, refusing to replace one unless
`overwrite`; `export_all` writes every format with the helpers here), and
`artefact_paths` finds them again for verification, serving and
benchmarks. Every format carries the
model's class names: `assets/labels.txt` in the SavedModel, `labels.txt`
beside the TFLite files, `class_names` in the ONNX metadata.
"""

import tempfile
from pathlib import Path

from keras_deeplab import __version__
from keras_deeplab.export.layout import (
    ANY_SIZE,
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
    tflite_name,
)
from keras_deeplab.export.onnx import export_onnx
from keras_deeplab.export.onnx_int8 import quantize_onnx_int8
from keras_deeplab.export.openvino_ir import export_openvino
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.tflite import convert_tflite_variants
from keras_deeplab.export.tflite_metadata import (
    segmenter_metadata,
    with_metadata,
)
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.utils.atomic import atomic_write_bytes, atomic_write_text
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.names import check_model_name


def refuse_existing(path, overwrite):
    """Raises FileExistsError for an artefact that is there, unless
    `overwrite`."""
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
    refuse_existing(path, overwrite)
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
    refuse_existing(path, overwrite)
    return export_openvino(model, path, class_names=class_names(model))


def tflite_paths(out_dir, *, size, quantizations, io_type, argmax) -> dict:
    """{precision: path} of the TFLite files of one input size."""
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
    paths = tflite_paths(
        out_dir,
        size=size,
        quantizations=quantizations,
        io_type=io_type,
        argmax=argmax,
    )
    for path in paths.values():
        refuse_existing(path, overwrite)
    flatbuffers = convert_tflite_variants(
        model,
        size=size,
        quantizations=quantizations,
        representative_images=representative_images,
        io_type=io_type,
        argmax=argmax,
    )
    for quantize, path in paths.items():
        write_tflite_file(
            model,
            path,
            flatbuffers[quantize],
            float_input=quantize != "int8" or io_type == "float32",
            argmax=argmax,
            fixed_size=size is not None,
        )
    return list(paths.values())


def _description(model) -> str:
    names = class_names(model)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"Semantic segmentation into {len(names)} classes ({shown})."


def write_tflite_file(
    model, path, flatbuffer, *, float_input, argmax, fixed_size
):
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
        fixed_size=fixed_size,
        version=f"keras_deeplab {__version__}",
    )
    atomic_write_bytes(
        path,
        with_metadata(flatbuffer, metadata, {LABELS_FILE: labels.encode()}),
    )


def artefact_name(path) -> str:
    """How `artefact_paths` and the parity table name an artefact."""
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
        artefact_name(p.parent): p.parent
        for p in sorted(out_dir.glob(f"{SERVING_DIR}/*/*/saved_model.pb"))
    }
    tflite = sorted(out_dir.glob(f"{TFLITE_DIR}/*.tflite"), key=_tflite_order)
    paths.update({p.stem: p for p in tflite})
    for file in (ONNX_FILE, ONNX_INT8_FILE, OPENVINO_FILE):
        if (out_dir / file).is_file():
            paths[file.name] = out_dir / file
    if not paths:
        raise UserInputError(
            f"no exported model under {str(out_dir)!r}; expected serving/, "
            "tflite/, onnx/ or openvino/ from `keras-deeplab export`."
        )
    return paths


def _tflite_order(path):
    """TFLite files grouped as a reader compares them: by input size
    (any size last), then by precision (fp32, fp16, drq_int8, int8)."""
    rest = path.stem.split("_", 1)[-1]  # after the model name
    precision = next(
        (
            p
            for p in sorted(TFLITE_PRECISIONS, key=len, reverse=True)
            if rest.startswith(p + "_")
        ),
        None,
    )
    if precision is None:  # a file of releases <= 0.2
        return (2, "", len(TFLITE_PRECISIONS), path.stem)
    size = rest[len(precision) + 1 :]
    rank = TFLITE_PRECISIONS.index(precision)
    return (int(size.startswith(ANY_SIZE)), size, rank, path.stem)


def disk_size_mb(path) -> float:
    """Size of a file (with its weights beside it, for an OpenVINO .xml),
    or of every file under a folder, in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
