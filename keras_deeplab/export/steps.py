"""The steps of `export_all`, each run in this process or in a fresh one.

A converter keeps much of what it allocated resident after it returns:
TensorFlow held ~4.4 GB after the TFLite conversions of a ResNet-50 at
513 px, which neither Python's collector nor glibc's `malloc_trim` handed
back, and every later step started from there (7.5 GB for all formats).
A step run in a process of its own gives all of it back when it ends, so
the steps' peaks do not add up.

`run` writes a JSON request (numpy images as `.npy` files beside it) and
starts `python -m keras_deeplab.export.steps REQUEST`; the child runs one
function of `STEPS` and writes a JSON reply: the result and the child's peak
memory, or the error's type and message. Nothing is pickled, and the
parent's `__main__` is not imported again (as multiprocessing's spawn would
do with a user's unguarded script). A step that needs the Keras model gets
the path of a `.keras` file in a child and the model itself in process.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from keras_deeplab.utils.atomic import (
    DiskFullError,
    atomic_write_bytes,
    atomic_write_text,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.memory import peak_rss_mb


class StepProcessKilledError(UserInputError):
    """A step's process was killed (by the kernel's out-of-memory killer,
    most often); what it was writing was not kept."""


def _model(model):
    """The model: loaded first where the step runs in its own process."""
    if isinstance(model, str):
        from keras_deeplab.models.files import load_model_file

        return load_model_file(model)
    return model


def saved_model(*, model, out_dir, **options) -> str:
    from keras_deeplab.export.saved_model import export_saved_model

    return str(export_saved_model(_model(model), out_dir, **options))


def tflite_input(*, model, directory, size, argmax) -> str:
    from keras_deeplab.export.tflite import write_converter_input

    write_converter_input(_model(model), directory, size=size, argmax=argmax)
    return directory


def tflite(*, directory, flatbuffer_path, **options) -> str:
    """Converts `tflite_input`'s folder to a flatbuffer file (without
    metadata: the parent adds it)."""
    from keras_deeplab.export.tflite import convert_saved_model

    flatbuffer = convert_saved_model(directory, **options)
    atomic_write_bytes(flatbuffer_path, flatbuffer)
    return flatbuffer_path


def onnx(*, model, path, metadata) -> str:
    from keras_deeplab.export.onnx import export_onnx

    return str(export_onnx(_model(model), path, metadata=metadata))


def onnx_int8(*, source, path, representative_images) -> str:
    from keras_deeplab.export.onnx_int8 import quantize_onnx_int8

    return str(
        quantize_onnx_int8(
            source, path, representative_images=representative_images
        )
    )


def openvino(*, onnx_path, xml_path, class_names) -> str:
    from keras_deeplab.export.openvino_ir import onnx_to_openvino

    return str(onnx_to_openvino(onnx_path, xml_path, class_names=class_names))


STEPS = {
    step.__name__: step
    for step in (saved_model, tflite_input, tflite, onnx, onnx_int8, openvino)
}
# Errors the parent raises again as themselves: the CLI prints them in one
# line. Any other error keeps its traceback in the child's stderr.
_KNOWN_ERRORS = {
    error.__name__: error
    # Subclasses before their base: a child reports the first that matches.
    for error in (
        DiskFullError,
        UserInputError,
        FileExistsError,
        FileNotFoundError,
    )
}


def run(step, *, separate_process, images=None, **kwargs):
    """Runs `STEPS[step](**kwargs)`, here or in a fresh Python process.

    Args:
        separate_process: bool. Run in a child process; `kwargs` must then
            be JSON-able (a model as the path of its `.keras` file).
        images: list of numpy arrays or None; passed as
            `representative_images` (as `.npy` files to a child).

    Returns:
        (the step's result, the child's peak resident memory in MB or None
        in process).

    Raises:
        StepProcessKilledError: if the child was killed.
        whatever the step raised (other than the known error types, as
        RuntimeError naming the step).
    """
    if images is not None:
        kwargs["representative_images"] = images
    if not separate_process:
        return STEPS[step](**kwargs), None
    with tempfile.TemporaryDirectory(prefix="keras_deeplab_step_") as folder:
        folder = Path(folder)
        if images is not None:
            kwargs["representative_images"] = _saved_arrays(images, folder)
        request = folder / "request.json"
        request.write_text(json.dumps({"step": step, "kwargs": kwargs}))
        completed = subprocess.run(
            [sys.executable, "-m", __name__, str(request)],
            env=_child_environment(),
            check=False,
        )
        reply_file = folder / "reply.json"
        if not reply_file.is_file():
            raise StepProcessKilledError(_killed_message(step, completed))
        reply = json.loads(reply_file.read_text())
    if "error" in reply:
        raise _error(step, **reply["error"])
    return reply["result"], reply["peak_mb"]


def _saved_arrays(arrays, folder) -> list:
    paths = []
    for index, array in enumerate(arrays):
        path = folder / f"image_{index:04d}.npy"
        np.save(path, np.asarray(array), allow_pickle=False)
        paths.append(str(path))
    return paths


def _child_environment() -> dict:
    """The parent's environment, with this copy of the package first on
    the path and the parent's Keras backend."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, [env.get("PYTHONPATH")])]
    )
    if "keras" in sys.modules:
        env["KERAS_BACKEND"] = sys.modules["keras"].backend.backend()
    return env


def _killed_message(step, completed) -> str:
    code = completed.returncode
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
        if -code == signal.SIGKILL:
            how += " (the kernel's out-of-memory killer sends it)"
    else:
        how = f"exited with status {code} without a reply"
    return (
        f"export step {step!r} ran in a process of its own, which {how}; "
        "nothing half-written was kept. Free memory or export the formats "
        "one at a time (export --format ...)."
    )


def _error(step, *, type, message):
    if type in _KNOWN_ERRORS:
        return _KNOWN_ERRORS[type](message)
    return RuntimeError(
        f"export step {step!r} failed in its own process ({type}: "
        f"{message}); its traceback is above."
    )


def _main(request_path) -> int:
    """The child: runs one step, writes its reply beside the request."""
    request_path = Path(request_path)
    request = json.loads(request_path.read_text())
    kwargs = request["kwargs"]
    if "representative_images" in kwargs:
        kwargs["representative_images"] = [
            np.load(path, allow_pickle=False)
            for path in kwargs["representative_images"]
        ]
    try:
        reply = {"result": STEPS[request["step"]](**kwargs)}
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group: the parent reports it.
        return 130
    except Exception as err:  # noqa: BLE001 - handed to the parent
        kind = next(
            (
                name
                for name, known in _KNOWN_ERRORS.items()
                if isinstance(err, known)
            ),
            None,
        )
        if kind is None:
            traceback.print_exc()
        reply = {
            "error": {"type": kind or type(err).__name__, "message": str(err)}
        }
    reply["peak_mb"] = peak_rss_mb()
    atomic_write_text(request_path.with_name("reply.json"), json.dumps(reply))
    return 1 if "error" in reply else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
