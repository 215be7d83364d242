"""The one export writer and the one artefact layout.

    <dir>/serving/<model_name>/<version>/      SavedModel (TF Serving)
    <dir>/tflite/deeplab_<quantize>_<size|dynamic>[_<io_type>][_argmax].tflite
    <dir>/onnx/deeplab.onnx, deeplab_int8.onnx (QDQ, for onnxruntime)

`export` writes one artefact (atomically, refusing to replace one unless
`overwrite`), `export_all` every format, and `artefact_paths` finds them
again for verification, serving and benchmarks.
"""

import tempfile
from pathlib import Path

from keras_deeplab.atomic import atomic_file
from keras_deeplab.errors import UserInputError
from keras_deeplab.export.onnx import export_onnx, quantize_onnx_int8
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.tflite import QUANTIZATIONS, convert_tflite_variants
from keras_deeplab.names import check_model_name

FORMATS = ("saved_model", "tflite", "onnx")
SERVING_DIR = "serving"
TFLITE_DIR = "tflite"
ONNX_FILE = Path("onnx") / "deeplab.onnx"
ONNX_INT8_FILE = ONNX_FILE.with_name("deeplab_int8.onnx")
ONNX_QUANTIZATIONS = ("none", "int8")
_TFLITE_PREFIX = "deeplab"


def tflite_name(
    *, quantize="none", size=None, io_type="float32", argmax=False
) -> str:
    """File name of a TFLite variant, e.g. deeplab_int8_513_uint8.tflite."""
    parts = [_TFLITE_PREFIX, quantize, str(size) if size else "dynamic"]
    if io_type != "float32":
        parts.append(io_type)
    if argmax:
        parts.append("argmax")
    return "_".join(parts) + ".tflite"


def _refuse_existing(path, overwrite):
    if Path(path).exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; choose another --out or pass "
            "--overwrite to replace it."
        )


def _fresh(path, overwrite):
    _refuse_existing(path, overwrite)
    return path


def export(
    model,
    fmt: str,
    out_dir,
    *,
    size=None,
    quantize="none",
    representative_images=None,
    io_type="float32",
    argmax=False,
    model_name="deeplab",
    version=1,
    overwrite=False,
) -> Path:
    """Writes one artefact of `model` under `out_dir`; returns its path.

    Args:
        model: DeepLabV3 keras.Model (with or without aux head).
        fmt: str. "saved_model", "tflite" or "onnx".
        out_dir: str or Path. Export folder (the layout above).
        size: int or None. TFLite: fixed square input side; None: dynamic.
        quantize: str. TFLite: "none", "fp16", "dynamic" or "int8".
        representative_images: TFLite int8: float32 (h, w, 3) RGB images.
        io_type: str. TFLite int8 input type.
        argmax: bool. TFLite returns uint8 class ids.
        model_name: str. SavedModel: TF Serving model name (one folder).
        version: int. SavedModel: TF Serving version folder.
        overwrite: bool. Replace an existing artefact.

    Raises:
        UserInputError: for an unknown format or invalid option.
        FileExistsError: if the artefact exists and `overwrite` is False.
    """
    out_dir = Path(out_dir)
    if fmt == "saved_model":
        return export_saved_model(
            model,
            out_dir / SERVING_DIR,
            model_name=check_model_name(model_name),
            version=version,
            overwrite=overwrite,
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
    if fmt == "onnx":
        if quantize not in ONNX_QUANTIZATIONS:
            raise UserInputError(
                f"quantize={quantize!r} is not supported for ONNX; expected "
                f"one of {ONNX_QUANTIZATIONS}."
            )
        path = out_dir / (ONNX_FILE if quantize == "none" else ONNX_INT8_FILE)
        _refuse_existing(path, overwrite)
        if quantize == "none":
            return export_onnx(model, path)
        if representative_images is None:
            raise UserInputError(
                "ONNX int8 calibrates activations on training images; pass "
                "--config CONFIG."
            )
        with tempfile.TemporaryDirectory() as directory:
            source = export_onnx(model, Path(directory) / "fp32.onnx")
            return quantize_onnx_int8(
                source, path, representative_images=representative_images
            )
    raise UserInputError(
        f"format={fmt!r} is not supported; expected one of {FORMATS}."
    )


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
    """TFLite files of one input size, one per quantization; their paths."""
    paths = {
        quantize: Path(out_dir)
        / TFLITE_DIR
        / tflite_name(
            quantize=quantize,
            size=size,
            io_type=io_type if quantize == "int8" else "float32",
            argmax=argmax,
        )
        for quantize in quantizations
    }
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
        with atomic_file(path) as temporary:
            temporary.write_bytes(flatbuffers[quantize])
    return list(paths.values())


def export_all(
    model,
    out_dir,
    *,
    size,
    representative_images,
    model_name="deeplab",
    version=1,
    overwrite=False,
) -> dict:
    """SavedModel, TFLite (every quantization at `size`, plus fp32 with a
    dynamic size) and ONNX (fp32 and QDQ int8); returns {name: path}, named
    as `artefact_paths` names them."""
    common = {"overwrite": overwrite}
    paths = {
        f"saved_model v{version}": export(
            model,
            "saved_model",
            out_dir,
            model_name=model_name,
            version=version,
            **common,
        )
    }
    for variant_size, quantizations in (
        (size, QUANTIZATIONS),
        (None, ("none",)),
    ):
        for path in _write_tflite(
            model,
            out_dir,
            size=variant_size,  # None: dynamic height/width
            quantizations=quantizations,
            representative_images=representative_images,
            **common,
        ):
            paths[path.stem] = path
    int8_path = _fresh(Path(out_dir) / ONNX_INT8_FILE, overwrite)
    paths[ONNX_FILE.name] = export(model, "onnx", out_dir, **common)
    paths[ONNX_INT8_FILE.name] = quantize_onnx_int8(
        paths[ONNX_FILE.name],
        int8_path,
        representative_images=representative_images,
    )
    return paths


def artefact_paths(out_dir) -> dict:
    """{name: path} of every SavedModel, TFLite and ONNX file in a folder.

    Names: "saved_model v<version>", the TFLite file stem, "deeplab.onnx".

    Raises:
        UserInputError: if there is none.
    """
    out_dir = Path(out_dir)
    paths = {
        f"saved_model v{p.parent.name}": p.parent
        for p in sorted(out_dir.glob(f"{SERVING_DIR}/*/*/saved_model.pb"))
    }
    paths.update(
        {p.stem: p for p in sorted(out_dir.glob(f"{TFLITE_DIR}/*.tflite"))}
    )
    for onnx_file in (ONNX_FILE, ONNX_INT8_FILE):
        if (out_dir / onnx_file).is_file():
            paths[onnx_file.name] = out_dir / onnx_file
    if not paths:
        raise UserInputError(
            f"no exported model under {str(out_dir)!r}; expected serving/, "
            "tflite/ or onnx/ from `keras-deeplab export`."
        )
    return paths


def disk_size_mb(path) -> float:
    """Size of a file, or of every file under a folder, in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
