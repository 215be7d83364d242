"""Command line: demo output and user-error handling."""

import pytest

from keras_deeplab.cli import main


def test_user_error_exits_2_with_one_line(capsys):
    assert main(["demo", "--num-classes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "keras-deeplab demo: error: num_classes=0 is invalid; expected an "
        "int >= 1, e.g. num_classes=21 for Pascal VOC."
    ]


@pytest.mark.slow
def test_demo_prints_report_and_writes_overlay(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "65"]) == 0
    out = capsys.readouterr().out
    assert "OS16: 39,131,285 params" in out
    assert "165.8 GMACs at 513x513" in out
    assert (tmp_path / "overlay.png").stat().st_size > 0
