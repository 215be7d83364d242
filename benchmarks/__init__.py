"""The benchmark harness (run from a clone, not installed with the library).

`python -m benchmarks.run --out DIR` measures latency, memory and
efficiency of every runtime, each in its own process (`suite`, `measure`),
writes results.json, results.md and latency.png (`results`, `report`) and
compares with a baseline (`--compare`). `accelerator` measures JAX training
throughput and MFU on a GPU host (`benchmarks/gpu.sh`). See
docs/performance.md.
"""
