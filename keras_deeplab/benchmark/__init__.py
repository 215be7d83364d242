"""Benchmarks: latency, memory and efficiency of every runtime.

`suite.run_benchmark` measures (each runtime in its own process),
`report` turns results into tables, a chart and a regression check, and
`accelerator` measures JAX training throughput and MFU on a GPU host.
"""

from keras_deeplab.benchmark.report import compare, format_markdown
from keras_deeplab.benchmark.suite import BenchmarkPlan, run_benchmark

__all__ = ["BenchmarkPlan", "compare", "format_markdown", "run_benchmark"]
