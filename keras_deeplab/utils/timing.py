"""Wall-clock timing of repeated calls: the one timer of the project.

Used by `verify-export` (latency beside parity), the notebooks and the
benchmark harness in the repository's `benchmarks/`.
"""

import statistics
import time


def time_calls(fn, *, warmup: int = 1, repeats: int = 3) -> dict:
    """Median and minimum wall time of `fn()` after `warmup` untimed calls.

    Returns:
        {"median_s": float, "min_s": float}.
    """
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds)}
