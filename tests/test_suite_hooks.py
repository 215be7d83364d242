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


def _run_throwaway(tmp_path, tests, *, environment=None):
    shutil.copy(_ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_throwaway.py").write_text(tests)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"]
        + ["-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(_ROOT), **(environment or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return run, run.stdout + run.stderr


_SLOW_BUT_UNMARKED = """
import time
import pytest

def test_quick():
    pass

def test_unmarked_and_slow():
    time.sleep(1.5)

@pytest.mark.slow
def test_marked_and_slow():
    time.sleep(1.5)
"""


@pytest.mark.slow
def test_in_ci_a_slow_test_not_marked_slow_fails_and_durations_are_kept(
    tmp_path,
):
    """With CI set, a fast-lane test over the limit fails, named, and the
    slowest phases go to ci-durations.txt."""
    environment = {"CI": "true", "KERAS_DEEPLAB_FAST_TEST_LIMIT_S": "1"}
    run, output = _run_throwaway(
        tmp_path, _SLOW_BUT_UNMARKED, environment=environment
    )
    assert run.returncode == 1, output[-3000:]
    assert "FAILED test_throwaway.py::test_unmarked_and_slow" in output
    assert "is not marked slow but took" in output
    assert "2 passed" in output, output[-3000:]
    durations = (tmp_path / "ci-durations.txt").read_text()
    assert "test_marked_and_slow" in durations.splitlines()[0] or (
        "test_unmarked_and_slow" in durations.splitlines()[0]
    )


@pytest.mark.slow
def test_a_crashed_worker_fails_its_test_and_the_run_goes_on(tmp_path):
    """A native abort in one test (TensorFlow's CHECK failures end the
    process) is reported as that test's failure; the conftest hooks do not
    turn it into an INTERNALERROR that stops the run, and the other tests
    still run."""
    run, output = _run_throwaway(tmp_path, _THROWAWAY_TESTS)
    assert "INTERNALERROR" not in output, output[-3000:]
    assert run.returncode == 1, output[-3000:]
    assert "FAILED test_throwaway.py::test_aborts" in output, output[-3000:]
    assert "3 passed" in output, output[-3000:]
