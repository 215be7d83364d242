"""The checkpoint reader's fuzz corpus replayed, and a bounded fuzz run.

tests/fixtures/torch_corpus holds the seeds (genuine files of both
formats, payload pickles) and every input that ever broke the reader, named
by the probe or fuzz finding (F..) behind it; "seed-" and "read-" inputs
must be read, every other one refused; tests/fuzz_torch_file.py says what
each input's first byte means and what counts as a finding.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_deeplab.convert.torch_file import read_torch_file
from keras_deeplab.utils.errors import UserInputError
from tests.fuzz_torch_file import PAYLOAD_MARKER, check_plain, file_bytes

_ROOT = Path(__file__).resolve().parents[1]
CORPUS = _ROOT / "tests" / "fixtures" / "torch_corpus"
_INPUTS = sorted(CORPUS.iterdir())
# The bounded run of CI; a developer's longer run: docs/pretrained.md.
_FUZZ_SECONDS = 45
_RSS_LIMIT_MB = 1024


@pytest.mark.parametrize("path", _INPUTS, ids=[p.name for p in _INPUTS])
def test_every_corpus_input_is_read_or_refused_in_one_line(path, tmp_path):
    """Seeds read cleanly; payloads and every past finding are refused
    with the reader's one-line error naming the file; no payload runs."""
    os.chdir(tmp_path)
    checkpoint = tmp_path / "input.pth"
    checkpoint.write_bytes(file_bytes(path.read_bytes(), tmp_path))
    if path.name.startswith(("seed-", "read-")):
        check_plain(read_torch_file(checkpoint))
    else:
        with pytest.raises(UserInputError) as refusal:
            read_torch_file(checkpoint, max_bytes=64 * 2**20)
        message = str(refusal.value)
        assert "input.pth" in message and "\n" not in message, message
    assert not (tmp_path / PAYLOAD_MARKER).exists()


@pytest.mark.slow
def test_a_bounded_fuzz_run_finds_nothing(tmp_path):
    """libFuzzer (atheris) mutates the corpus for a fixed time under an RSS
    limit: no exception but the reader's own, no crash, no payload run, no
    memory past the limit."""
    pytest.importorskip("atheris")
    work = tmp_path / "work"
    work.mkdir()
    # Through a shell that forks the fuzzer: libFuzzer's RSS limit reads
    # ru_maxrss, which a process inherits from the one it was forked from
    # (a pytest worker with TensorFlow loaded: 3 GB, an "oom" at once).
    run = subprocess.run(
        [
            "/bin/sh",
            "-c",
            '"$@"; exit $?',
            "sh",
            sys.executable,
            "-m",
            "tests.fuzz_torch_file",
            str(work),
            str(CORPUS),
            f"-max_total_time={_FUZZ_SECONDS}",
            f"-rss_limit_mb={_RSS_LIMIT_MB}",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        capture_output=True,
        text=True,
        timeout=_FUZZ_SECONDS + 240,
        check=False,
    )
    output = run.stdout + run.stderr
    findings = sorted(p.name for p in tmp_path.glob("crash-*"))
    findings += sorted(p.name for p in tmp_path.glob("oom-*"))
    assert run.returncode == 0 and not findings, (findings, output[-4000:])
    runs = int(re.search(r"Done (\d+) runs", output).group(1))
    peak = int(re.search(r"stat::peak_rss_mb:\s*(\d+)", output).group(1))
    print(f"fuzz: {runs} inputs in {_FUZZ_SECONDS} s, peak RSS {peak} MB")
    assert runs > 1000 and peak < _RSS_LIMIT_MB
