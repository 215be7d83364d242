"""Ctrl-C during `model.fit` stops training even where the KeyboardInterrupt
it raised was swallowed (tests/test_adversarial.py runs it end to end)."""

import signal

import keras
import numpy as np
import pytest

from keras_deeplab.training.interrupts import (
    StopWhenInterrupted,
    interrupts_remembered,
)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler, whatever the test runner installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _SwallowsOneInterrupt(keras.callbacks.Callback):
    """Ctrl-C arriving where library code catches what it raises."""

    def __init__(self, at_batch):
        super().__init__()
        self.at_batch = at_batch
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.at_batch:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass


def _fit(callbacks):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    data = np.ones((40, 4), "float32"), np.ones((40, 2), "float32")
    model.fit(*data, batch_size=4, epochs=3, callbacks=callbacks, verbose=0)


def test_a_swallowed_interrupt_stops_fit_at_the_batch_end(default_sigint):
    swallower = _SwallowsOneInterrupt(at_batch=2)
    with interrupts_remembered() as interrupted:
        with pytest.raises(KeyboardInterrupt):
            _fit([swallower, StopWhenInterrupted(interrupted)])
    assert swallower.batches == 2  # not 30: training stopped there
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_the_guard_the_interrupt_is_lost(default_sigint):
    """The failure the guard exists for."""
    swallower = _SwallowsOneInterrupt(at_batch=2)
    _fit([swallower])
    assert swallower.batches == 30


def test_another_sigint_handler_is_left_alone():
    """An application that handles SIGINT itself."""
    calls = []

    def own_handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, own_handler)
    try:
        with interrupts_remembered() as interrupted:
            assert signal.getsignal(signal.SIGINT) is own_handler
            signal.raise_signal(signal.SIGINT)
        assert calls == [signal.SIGINT]
        assert not interrupted.is_set()
    finally:
        signal.signal(signal.SIGINT, previous)
