import sys

import numpy as np
import pytest

from keras_deeplab.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux's /proc"
)


def test_a_reset_peak_forgets_memory_already_freed():
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    del block
    assert peak_rss_mb() >= rss_mb() + 250
    reset_peak_rss()
    assert peak_rss_mb() < rss_mb() + 50


def test_a_measured_step_reports_its_own_peak_and_time():
    from keras_deeplab.utils.memory import measured_step

    with measured_step() as cost:
        block = np.ones(300 * 2**20 // 8)
        del block
    assert cost["peak_mb"] >= rss_mb() + 250
    assert cost["seconds"] >= 0
    with measured_step() as quiet:
        pass
    assert quiet["peak_mb"] < rss_mb() + 50
