"""Ctrl-C during `model.fit` always stops training, at the latest at the
end of the current batch.

Python turns SIGINT into a KeyboardInterrupt where the main thread next
runs Python code. During `model.fit` that is often inside TensorFlow's or
Keras' own code, and an exception raised where a native library checks for
signals and then carries on is lost: twice in CI a trainer sent SIGINT
trained on to its last epoch and exited 0. So, while training, SIGINT is
also remembered, and a callback raises KeyboardInterrupt at the next batch
or epoch end wherever the first one went.
"""

import contextlib
import signal
import threading

import keras


@contextlib.contextmanager
def interrupts_remembered():
    """Within: SIGINT raises KeyboardInterrupt as usual and also sets the
    yielded `threading.Event`.

    Only where SIGINT has Python's default handler (as in a script, and in
    a Jupyter kernel while a cell runs) and this is the main thread;
    elsewhere (an application's own handler, SIGINT ignored, a worker
    thread) the handler is left alone and the event is never set.
    """
    interrupted = threading.Event()

    def remember_and_raise(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return
    signal.signal(signal.SIGINT, remember_and_raise)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class StopWhenInterrupted(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of a batch or an epoch once
    `interrupted` (an Event from `interrupts_remembered`) is set."""

    def __init__(self, interrupted):
        super().__init__()
        self._interrupted = interrupted

    def _raise_if_interrupted(self, *args, **kwargs):
        if self._interrupted.is_set():
            raise KeyboardInterrupt

    on_train_batch_end = _raise_if_interrupted
    on_test_batch_end = _raise_if_interrupted
    on_epoch_end = _raise_if_interrupted
