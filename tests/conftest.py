"""Shared fixtures (seeding, dtype policy), how xdist splits the suite, and
the suite's memory: each test process's peak resident memory per module and
what each module left resident after its cleanup, reported at the end of
the run (the modules with the highest peaks and the largest leftovers)."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_deeplab.utils.memory import (  # noqa: E402
    peak_rss_mb,
    release_freed_memory,
    reset_peak_rss,
    rss_mb,
)

# [(process, module, peak MB, MB left resident)] of this process (under
# xdist, of every worker once it has finished, in the controller).
_MODULE_PEAKS = []
_REPORTED = 5


def _shares_a_fixture(item):
    """The test uses a module- or session-scoped fixture of ours (other
    than the housekeeping every module has)."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        definition.scope in ("module", "session")
        and definition.argname != "released_after_each_module"
        and not definition.func.__module__.startswith("_pytest")
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """With `--dist loadgroup` (setup.cfg), the tests of a module that share
    a module-scoped model or export run on one xdist worker, so it is built
    once; every other test goes to whichever worker is free. Modules that
    share a session fixture name one group: `pytestmark = xdist_group(...)`.
    """
    for item in items:
        if not item.get_closest_marker("xdist_group") and _shares_a_fixture(
            item
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Slow tests first (a stable sort: each module keeps its order). xdist
    # hands out the groups first, then single tests in this order: the
    # minute-long tests of tests/training/, collected last, left one worker
    # running alone at the end of the run while the other sat idle.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _custom_gradients():
    """TensorFlow's global gradient registry (a dict of name -> function),
    or {} on another backend or TensorFlow version."""
    if keras.backend.backend() != "tensorflow":
        return {}
    from tensorflow.python.framework import ops

    registry = getattr(ops, "_gradient_registry", None)
    return getattr(registry, "_registry", {})


def _forget_custom_gradients(registered_before):
    """Drops the gradients `tf.custom_gradient` registered since then.

    Every trace of a Keras train step registers one (TensorFlow's
    distribute all-reduce of the gradients uses `tf.custom_gradient`), and
    the registry, never emptied, keeps the traced graph and every weight
    and optimizer slot it captured alive: each model a module trained
    stayed resident after it was freed (tensorflow/tensorflow#97697,
    keras-team/keras#20245). A finished module traces nothing more, so its
    entries are never looked up again. Our own layers register no such
    per-trace gradient (`keras_deeplab.layers.atrous._space_to_batch_gradient`).
    """
    registry = _custom_gradients()
    for name in set(registry) - registered_before:
        if name.startswith("CustomGradient-"):
            del registry[name]


@pytest.fixture(autouse=True, scope="module")
def released_after_each_module(request):
    """Each xdist worker runs hundreds of tests in one process: Keras' global
    state and TensorFlow's traced functions of a finished module are freed
    (a worker reached 9 GB without this). The module's peak resident memory
    is recorded with what stayed resident once it was freed (memory a
    module leaves behind raises every later module's peak), and the next
    module's peak starts afresh."""
    start = rss_mb()
    registered_before = set(_custom_gradients())
    yield
    peak = peak_rss_mb()
    keras.backend.clear_session()
    _forget_custom_gradients(registered_before)
    release_freed_memory()
    if peak is not None:
        process = os.environ.get("PYTEST_XDIST_WORKER", "main")
        left = rss_mb() - start
        _MODULE_PEAKS.append((process, request.module.__name__, peak, left))
    reset_peak_rss()


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker
        session.config.workeroutput["module_peaks"] = _MODULE_PEAKS


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller gathers each xdist worker's module peaks. A worker
    that crashed (a native abort) sends none: xdist reports the test it was
    running as failed and starts another worker, and the run goes on."""
    workeroutput = getattr(node, "workeroutput", {})
    _MODULE_PEAKS.extend(
        tuple(peak) for peak in workeroutput.get("module_peaks", [])
    )


# With CI set: a fast test whose body takes longer fails (it belongs in the
# slow lane), and the slowest phases are written to this file beside the run.
FAST_TEST_LIMIT_S = float(os.environ.get("KERAS_DEEPLAB_FAST_TEST_LIMIT_S", 20))
CI_DURATIONS_FILE = "ci-durations.txt"
_CI_DURATIONS_SHOWN = 40
_DURATIONS = []  # (seconds, phase, nodeid), in the controller


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("CI")
        and call.when == "call"
        and report.passed
        and not item.get_closest_marker("slow")
        and call.duration > FAST_TEST_LIMIT_S
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is not marked slow but took {call.duration:.0f} s "
            f"(more than {FAST_TEST_LIMIT_S} s): mark it "
            "@pytest.mark.slow (docs/development.md) or make it faster."
        )


def pytest_runtest_logreport(report):
    _DURATIONS.append((report.duration, report.when, report.nodeid))


def _write_ci_durations(rootdir):
    slowest = sorted(_DURATIONS, reverse=True)[:_CI_DURATIONS_SHOWN]
    lines = [f"{s:8.1f}s {when:<8} {nodeid}" for s, when, nodeid in slowest]
    total = sum(seconds for seconds, _, _ in _DURATIONS)
    lines.append(f"{total:8.1f}s in all phases of {len(_DURATIONS)} reports")
    (Path(rootdir) / CI_DURATIONS_FILE).write_text("\n".join(lines) + "\n")


def pytest_terminal_summary(terminalreporter):
    is_worker = hasattr(terminalreporter.config, "workeroutput")
    if os.environ.get("CI") and _DURATIONS and not is_worker:
        _write_ci_durations(terminalreporter.config.rootpath)
    if not _MODULE_PEAKS:
        return
    by_process = {}
    for process, *record in _MODULE_PEAKS:
        by_process.setdefault(process, []).append(record)
    terminalreporter.section("peak resident memory of the test processes")
    for process, records in sorted(by_process.items()):
        highest = sorted(records, key=lambda r: -r[1])[:_REPORTED]
        kept = sorted(records, key=lambda r: -r[2])[:_REPORTED]
        terminalreporter.write_line(
            f"{process}: {highest[0][1] / 1024:.1f} GB; highest modules: "
            + ", ".join(f"{m} {peak / 1024:.1f} GB" for m, peak, _ in highest)
        )
        terminalreporter.write_line(
            f"{process}: {sum(r[2] for r in records) / 1024:+.1f} GB left "
            "resident by all modules; most by: "
            + ", ".join(f"{m} {left / 1024:+.2f} GB" for m, _, left in kept)
        )


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and the backend before every test."""
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def float32_policy():
    """Restores the global dtype policy a test may have changed."""
    yield
    keras.config.set_dtype_policy("float32")
