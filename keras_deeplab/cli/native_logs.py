"""Quiet mode of the CLI: TensorFlow's native INFO/WARNING lines off stderr.

TensorFlow, XLA, the TFLite converter and LiteRT log from C++ through absl
and TSL straight to file descriptor 2, and since TF 2.16 absl's lines
("I0000 00:00:...] Starting new session") ignore `TF_CPP_MIN_LOG_LEVEL`.
`filtered_stderr` routes fd 2 through a pipe and drops those lines only;
errors (E/F lines) and everything Python writes pass through unchanged and in
order. The few lines TensorFlow prints while it is first imported, before the
CLI runs, are not covered: the package registers its Keras layers on import.
"""

import contextlib
import os
import re
import sys
import threading

# absl/glog: "I0000 00:00:1795.123 4567 port.cc:153] ..."; TSL before absl:
# "2025-09-17 14:44:05.157831: I external/..."; LiteRT: "INFO: Created ...";
# the TFLite quantizer: "fully_quantize: 0, inference_type: 6, ..."; and
# one E-level line that reports no error: oneDNN falling back to Eigen for
# an int32 op (the Lovász loss's sort), whatever the CPU.
_NATIVE_LINE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\] "
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ util\.cc:\d+\] oneDNN supports "
    rb"DT_INT32 only"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
    rb"|INFO: |fully_quantize: \d"
    rb"|WARNING: All log messages before absl::InitializeLog)"
)
# The second line of cpu_feature_guard's two-line INFO message.
_CONTINUATION = re.compile(rb"^To enable the following instructions: ")


def _pump(pipe_fd, out_fd):
    dropped = False
    with os.fdopen(pipe_fd, "rb") as pipe, os.fdopen(out_fd, "wb", 0) as out:
        for line in pipe:
            dropped = bool(
                _NATIVE_LINE.match(line)
                or (dropped and _CONTINUATION.match(line))
            )
            if not dropped:
                out.write(line)


def _quiet_python_loggers():
    import logging

    for name in ("tensorflow", "absl", "h5py", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def filtered_stderr():
    """Drops native INFO/WARNING log lines written to fd 2 inside the block.

    Also sets `TF_CPP_MIN_LOG_LEVEL=2` for TensorFlow's own C++ logging (read
    once, when TensorFlow loads) and raises TensorFlow's and tf2onnx's Python
    loggers to ERROR.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_python_loggers()
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(
        target=_pump, args=(read_fd, os.dup(real_stderr)), daemon=True
    )
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: EOF
        os.close(real_stderr)
        pump.join(timeout=10)
