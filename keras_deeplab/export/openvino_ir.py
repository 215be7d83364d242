"""OpenVINO IR export (`.xml` graph + `.bin` weights), dynamic batch and size.

Converted from our ONNX graph with `openvino.convert_model`: it is the graph
the parity tests already check, and OpenVINO's TensorFlow frontend does not
convert the Keras model itself (2026.4: the TensorFlow function carries the
custom-gradient outputs of the atrous layers, and MobileNetV3's squeeze-excite
mean fails its transpose sinking on dynamic shapes). The class names go into
the model's runtime info (`model_info/labels`, as OpenVINO's Model API reads
them, and `keras_deeplab/class_names` as JSON).
"""

import json
import tempfile
from pathlib import Path

from keras_deeplab.utils.atomic import atomic_file
from keras_deeplab.utils.errors import UserInputError


def _openvino():
    try:
        import openvino
    except ImportError as err:
        raise UserInputError(
            "OpenVINO export needs the openvino package: pip install -e "
            '".[export]" (or pip install openvino).'
        ) from err
    return openvino


def onnx_to_openvino(onnx_path, xml_path, *, class_names) -> Path:
    """Converts an ONNX file to `xml_path` and its `.bin`, each written to
    a temporary name and renamed (the `.bin` first, so a reader that finds
    the `.xml` finds its weights).

    Returns:
        The `.xml` path.
    """
    ov = _openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent) as directory:
        staged = Path(directory) / xml_path.name
        model = ov.convert_model(
            _for_openvino(onnx_path, staged.with_suffix(".onnx"))
        )
        model.set_rt_info(
            " ".join(name.replace(" ", "_") for name in class_names),
            ["model_info", "labels"],
        )
        model.set_rt_info("Segmentation", ["model_info", "model_type"])
        model.set_rt_info(
            json.dumps(list(class_names)), ["keras_deeplab", "class_names"]
        )
        ov.save_model(model, str(staged), compress_to_fp16=False)
        del model
        for suffix in (".bin", ".xml"):
            with atomic_file(xml_path.with_suffix(suffix)) as temporary:
                staged.with_suffix(suffix).replace(temporary)
    return xml_path


def _for_openvino(onnx_path, copy_path) -> str:
    """A copy of the ONNX file at `copy_path` with its final upsampling
    channels-first again, as OpenVINO runs it fastest
    (`onnx_rewrites.channels_first_resizes`; `convert_model` reads ONNX
    from files only)."""
    import onnx

    from keras_deeplab.export.onnx_rewrites import channels_first_resizes

    proto = onnx.load(str(onnx_path))
    channels_first_resizes(proto.graph)
    onnx.save(proto, str(copy_path))
    return str(copy_path)


def export_openvino(model, xml_path, *, class_names) -> Path:
    """Writes `model` as OpenVINO IR at `xml_path` (+ `.bin`), through a
    temporary ONNX export (`export_all` converts the one it wrote)."""
    from keras_deeplab.export.onnx import export_onnx  # TensorFlow: load late

    with tempfile.TemporaryDirectory() as directory:
        source = export_onnx(model, Path(directory) / "model.onnx")
        return onnx_to_openvino(source, xml_path, class_names=class_names)


def class_names_of(xml_path) -> list:
    """The class names stored in an exported `.xml`."""
    model = _openvino().Core().read_model(str(xml_path))
    return json.loads(
        model.get_rt_info(["keras_deeplab", "class_names"]).astype(str)
    )
