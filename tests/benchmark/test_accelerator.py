"""The GPU benchmark module runs under JAX without TensorFlow (on CPU here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.accelerator import chip_peak_tflops

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_chip_peak_lookup():
    assert chip_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert chip_peak_tflops("NVIDIA H200") == 989.4
    assert chip_peak_tflops("cpu") is None
    assert chip_peak_tflops("cpu", 1.5) == 1.5


@pytest.mark.slow
def test_accelerator_benchmark_runs_tiny_under_jax(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "gpu.json"
    # Prove TensorFlow is not needed: make importing it fail.
    (tmp_path / "tensorflow.py").write_text("raise ImportError('no TF')\n")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
    }
    tiny = ["--size", "65", "--batch", "2", "--steps", "1", "--warmup", "1"]
    tiny += ["--backbone-width", "8", "--head-filters", "16"]
    tiny += ["--peak-tflops", "1.0", "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", *tiny],
        env=env,
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu")
    assert result["train_images_per_s"] > 0
    assert result["predict_images_per_s"] > 0
    assert 0 < result["train_mfu"] < 1
