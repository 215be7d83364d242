"""Counts in what the commands print: "1 mask", "2 masks", "3 batches"."""

import pytest

from keras_deeplab.utils.progress import Progress, counted, plural


@pytest.mark.parametrize(
    ("count", "noun", "text"),
    [
        (1, "image", "1 image"),
        (0, "image", "0 images"),
        (2, "mask", "2 masks"),
        (3, "batch", "3 batches"),
        (1, "batch", "1 batch"),
    ],
)
def test_counted(count, noun, text):
    assert counted(count, noun) == text


def test_progress_lines_in_a_pipe_count_their_unit(capsys):
    assert plural("box") == "boxes"
    progress = Progress(2, unit="batch", verb="evaluated")
    progress.update(1)
    progress.update(2)
    progress.finish(2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("evaluated 1/2 batches (")
    assert lines[-1].startswith("evaluated 2/2 batches (")
