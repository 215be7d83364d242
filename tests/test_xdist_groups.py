"""The suite's sharing of expensive fixtures holds: under `--dist loadgroup`
(setup.cfg) a grouped test carries its group, so every test of the group
runs on one worker, which builds the group's exports and models once.

pytest 9.2 with pytest-xdist 3.8 lost the tag silently (pytest-xdist
issue 1386): each worker built every session export again, doubling the
suite's time and memory in those modules. setup.cfg pins pytest < 9.2.
"""

import pytest

pytestmark = pytest.mark.xdist_group("xdist_groups_check")


def test_a_grouped_test_runs_in_its_group(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("the suite runs in one process (-n 0)")
    assert request.node.nodeid.endswith("@xdist_groups_check"), (
        f"{request.node.nodeid}: pytest {pytest.__version__} and "
        "pytest-xdist no longer group tests; see setup.cfg"
    )


def test_slow_tests_are_handed_out_first(request):
    """The full run ends with short tests on both workers, not with one
    worker alone on a minute-long one (tests/conftest.py sorts them).
    xdist hands a group out whole, so only the order of the ungrouped tests
    counts (pytest orders a group's tests by their parametrized fixtures)."""
    slow = [
        item.get_closest_marker("slow") is not None
        for item in request.session.items
        if not item.get_closest_marker("xdist_group")
    ]
    assert slow == sorted(slow, reverse=True)
