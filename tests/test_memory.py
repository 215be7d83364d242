import mmap
import sys

import numpy as np
import pytest

from keras_deeplab.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux's /proc"
)


def _touch_and_unmap(size=300 * 2**20):
    """Makes `size` bytes resident, then hands them back to the system.

    An anonymous mapping of our own, not numpy's allocator: glibc may serve
    an allocation from heap it kept resident (in a worker that ran other
    modules first, this test once saw no peak above the current memory).
    """
    block = mmap.mmap(-1, size)
    np.frombuffer(block, np.uint8)[:] = 1  # every page touched
    block.close()


def test_a_reset_peak_forgets_memory_already_freed():
    _touch_and_unmap()
    assert peak_rss_mb() >= rss_mb() + 250
    reset_peak_rss()
    assert peak_rss_mb() < rss_mb() + 50


def test_a_measured_step_reports_its_own_peak_and_time():
    from keras_deeplab.utils.memory import measured_step

    with measured_step() as cost:
        _touch_and_unmap()
    assert cost["peak_mb"] >= rss_mb() + 250
    assert cost["seconds"] >= 0
    with measured_step() as quiet:
        pass
    assert quiet["peak_mb"] < rss_mb() + 50
