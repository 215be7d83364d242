import sys

import numpy as np
import pytest

from keras_deeplab.memory import peak_rss_mb, reset_peak_rss, rss_mb

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux's /proc"
)


def test_a_reset_peak_forgets_memory_already_freed():
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    del block
    assert peak_rss_mb() >= rss_mb() + 250
    reset_peak_rss()
    assert peak_rss_mb() < rss_mb() + 50
