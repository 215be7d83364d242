"""The one export writer and the one artefact layout.

    <dir>/serving/<model_name>/<version>/      SavedModel (TF Serving)
    <dir>/tflite/deeplab_<quantize>_<size|dynamic>[_<io_type>][_argmax].tflite
    <dir>/onnx/deeplab.onnx

`export` writes one artefact (atomically, refusing to replace one unless
`overwrite`), `export_all` every format, and `artefact_paths` finds them
again for verification, serving and benchmarks.
"""

from pathlib import Path

from keras_deeplab.atomic import atomic_file
from keras_deeplab.errors import UserInputError
from keras_deeplab.export.onnx import export_onnx
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.tflite import QUANTIZATIONS, convert_tflite
from keras_deeplab.names import check_model_name

FORMATS = ("saved_model", "tflite", "onnx")
SERVING_DIR = "serving"
TFLITE_DIR = "tflite"
ONNX_FILE = Path("onnx") / "deeplab.onnx"
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
        path = (
            out_dir
            / TFLITE_DIR
            / tflite_name(
                quantize=quantize, size=size, io_type=io_type, argmax=argmax
            )
        )
        _refuse_existing(path, overwrite)
        data = convert_tflite(
            model,
            size=size,
            quantize=quantize,
            representative_images=representative_images,
            io_type=io_type,
            argmax=argmax,
        )
        with atomic_file(path) as temporary:
            temporary.write_bytes(data)
        return path
    if fmt == "onnx":
        path = out_dir / ONNX_FILE
        _refuse_existing(path, overwrite)
        return export_onnx(model, path)
    raise UserInputError(
        f"format={fmt!r} is not supported; expected one of {FORMATS}."
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
) -> dict:
    """SavedModel, TFLite (every quantization at `size`, plus fp32 with a
    dynamic size) and ONNX; returns {name: path}, named as `artefact_paths`
    names them."""
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
    variants = [(quantize, size) for quantize in QUANTIZATIONS]
    variants.append(("none", None))  # dynamic height/width
    for quantize, variant_size in variants:
        path = export(
            model,
            "tflite",
            out_dir,
            size=variant_size,
            quantize=quantize,
            representative_images=representative_images,
            **common,
        )
        paths[path.stem] = path
    paths[ONNX_FILE.name] = export(model, "onnx", out_dir, **common)
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
    if (out_dir / ONNX_FILE).is_file():
        paths[ONNX_FILE.name] = out_dir / ONNX_FILE
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
