"""The suite's own hooks (tests/conftest.py) under a crashed xdist worker."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]

_THROWAWAY_TESTS = """
import os

def test_before():
    pass

def test_aborts():
    os.abort()  # what TensorFlow's CHECK failures do to a worker

def test_after_one():
    pass

def test_after_two():
    pass
"""


@pytest.mark.slow
def test_a_crashed_worker_fails_its_test_and_the_run_goes_on(tmp_path):
    """A native abort in one test (TensorFlow's CHECK failures end the
    process) is reported as that test's failure; the conftest hooks do not
    turn it into an INTERNALERROR that stops the run, and the other tests
    still run."""
    shutil.copy(_ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_throwaway.py").write_text(_THROWAWAY_TESTS)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "INTERNALERROR" not in output, output[-3000:]
    assert run.returncode == 1, output[-3000:]
    assert "FAILED test_throwaway.py::test_aborts" in output, output[-3000:]
    assert "3 passed" in output, output[-3000:]
