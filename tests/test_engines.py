"""`predict --engine beam|ray`: the real engines on this machine (Beam's
DirectRunner with two worker processes, a local Ray cluster, an S3 server on
127.0.0.1), each mask equal pixel for pixel to single-process `predict`'s.

One set of inputs for every test: 40 images of three sizes in two folders
(the same file names in both), one corrupt file and one image larger than
the whole-image limit the jobs run with (`--max-pixels 20000`).
"""

import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.cli import main
from keras_deeplab.inference import jobs
from keras_deeplab.inference.batch import InferenceOptions
from keras_deeplab.inference.predict import segment_files
from keras_deeplab.inference.tiling import Tiling
from tests.helpers import TINY

pytestmark = pytest.mark.slow

SIZES = [(33, 47), (48, 64), (65, 65)]
BIG = (120, 200)  # 24,000 pixels: over --max-pixels 20000
MAX_PIXELS = "20000"
TILE = 64


def _mask(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """{"root", "model", "images": [relative paths], "reference": {relative:
    mask}, "big": relative, "big_tiled": mask}."""
    root = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(7)
    images = []
    for index in range(40):
        folder = "a" if index % 2 else "b/deeper"
        suffix = ".png" if index % 3 else ".jpg"
        height, width = SIZES[index % 3]
        relative = f"images/{folder}/img{index // 2}{suffix}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / relative)
        images.append(relative)
    (root / "images/a/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    big = "images/a/big.png"
    pixels = rng.integers(0, 256, (*BIG, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / big)
    model = DeepLabV3(3, **TINY)
    model.save(root / "tiny.keras")
    reference = {}
    for relative in images:  # one call per file: stems repeat across folders
        out = root / "reference" / Path(relative).parent
        (mask,) = segment_files(model, [root / relative], out, confidence=True)
        reference[relative] = (
            _mask(mask),
            _mask(str(mask).replace("_mask", "_confidence")),
        )
    (big_mask,) = segment_files(
        model, [root / big], root / "reference_big", tiling=Tiling((TILE, TILE))
    )
    return {
        "root": root,
        "model": root / "tiny.keras",
        "images": images,
        "reference": reference,
        "big": big,
        "big_tiled": _mask(big_mask),
    }


def _predict(inputs, out, *extra, engine="beam"):
    pattern = str(inputs["root"] / "images" / "**" / "*.*")
    argv = ["predict", "--engine", engine, pattern, "--model"]
    argv += [
        str(inputs["model"]),
        "--out",
        str(out),
        "--max-pixels",
        MAX_PIXELS,
    ]
    return main([*argv, *extra])


def _output(out, relative, suffix="_mask.png"):
    stem = os.path.splitext(relative.removeprefix("images/"))[0]
    return Path(out) / f"{stem}{suffix}"


def _assert_equal_to_reference(inputs, out, *, confidence=True):
    for relative, (mask, scores) in inputs["reference"].items():
        np.testing.assert_array_equal(
            _mask(_output(out, relative)), mask, err_msg=relative
        )
        if confidence:
            np.testing.assert_array_equal(
                _mask(_output(out, relative, "_confidence.png")),
                scores,
                err_msg=relative,
            )


def _lines(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _partials(out) -> list:
    return glob.glob(
        f"{out}/**/*.partial*", recursive=True, include_hidden=True
    )


def _killed_mid_way(command, out):
    """Runs `command` in a session of its own and SIGKILLs the driver and
    its workers once 5 masks exist; returns how many did."""
    job = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while len(list(out.rglob("*_mask.png"))) < 5 and job.poll() is None:
        assert time.monotonic() < deadline, "no mask within 4 minutes"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return len(list(out.rglob("*_mask.png")))


def test_beam_killed_then_rerun_equals_predict_and_skips(
    inputs, tmp_path, capsys
):
    """Two worker processes: a job killed mid-way, run again, completes
    with every mask and confidence map equal to `predict`'s and no
    temporary file left; a third run writes nothing; with --tile the
    oversized image is done in tiles."""
    out = tmp_path / "masks"
    pattern = str(inputs["root"] / "images" / "**" / "*.*")
    options = ["--confidence", "--engine-option", "direct_num_workers=2"]
    command = [sys.executable, "-m", "keras_deeplab", "predict", "--engine",
               "beam", pattern, "--model", str(inputs["model"]), "--out",
               str(out), "--max-pixels", MAX_PIXELS, *options]  # fmt: skip
    done = _killed_mid_way(command, out)
    assert 5 <= done < 40, "the job was not killed mid-way"

    assert _predict(inputs, out, *options) == 1  # some inputs failed
    last = capsys.readouterr().out.strip().splitlines()[-1]
    counts = re.match(r"42 images: (\d+) written, (\d+) skipped", last)
    written, skipped = map(int, counts.groups())
    assert written + skipped == 40 and skipped >= done - 2, last
    assert "2 failed (see failed.jsonl)" in last
    assert not _partials(out)
    _assert_equal_to_reference(inputs, out)
    failed = {
        Path(r["input"]).name: r["error"] for r in _lines(out / "failed.jsonl")
    }
    assert set(failed) == {"corrupt.png", "big.png"}
    assert "corrupt.png" in failed["corrupt.png"]
    assert "200x120 pixels" in failed["big.png"]
    assert "--tile" in failed["big.png"]
    manifest = _lines(out / "manifest.jsonl")
    assert len(manifest) == 42
    assert all(
        sum(r["pixels_per_class"].values()) == r["size"][0] * r["size"][1]
        for r in manifest
        if "pixels_per_class" in r
    )

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*_mask.png")}
    assert _predict(inputs, out, *options) == 1
    assert "0 written, 40 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_mask.png")} == before
    assert _predict(inputs, out, "--tile", str(TILE), *options) == 1
    assert "1 written, 40 skipped" in capsys.readouterr().out
    np.testing.assert_array_equal(
        _mask(_output(out, inputs["big"])), inputs["big_tiled"]
    )


def test_ray_local_cluster_equals_predict(inputs, tmp_path, capsys):
    out = tmp_path / "masks"
    status = _predict(
        inputs,
        out,
        "--confidence",
        "--engine-option",
        "num_cpus=2",
        engine="ray",
    )
    assert status == 1
    assert (
        "40 written, 0 skipped (done before), 2 failed"
        in capsys.readouterr().out
    )
    _assert_equal_to_reference(inputs, out)
    assert not _partials(out)


def test_saved_model_handler_gives_the_keras_masks(inputs, tmp_path):
    from keras_deeplab.export.saved_model import export_saved_model
    from keras_deeplab.inference.engines.beam import segment_with_beam

    version = export_saved_model(
        __import__("keras").saving.load_model(inputs["model"]),
        tmp_path / "serving",
    )
    arguments = [str(inputs["root"] / "images" / "a" / "*.png")]
    out = tmp_path / "masks"
    settings = jobs.JobSettings(
        model=str(version), out=str(out), root=jobs.job_root(arguments)
    )
    one_process = {
        "direct_num_workers": "1",
        "direct_running_mode": "in_memory",
    }
    summary = segment_with_beam(arguments, settings, one_process)
    # 13 images and big.png (under the default limit); corrupt.png fails
    assert (summary.written, summary.failed) == (14, 1)
    for relative, (mask, _) in inputs["reference"].items():
        if relative.startswith("images/a/") and relative.endswith(".png"):
            np.testing.assert_array_equal(
                _mask(out / Path(relative).name.replace(".png", "_mask.png")),
                mask,
                err_msg=relative,
            )


@pytest.fixture
def s3_server():
    """moto's S3 server on 127.0.0.1 and a boto3 client of it."""
    pytest.importorskip("moto.server", reason="moto[server] is a dev extra")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "s3_endpoint_url": f"http://{host}:{port}",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
        "s3_region_name": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=options["s3_endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    yield client, options
    server.stop()


def test_beam_reads_and_writes_s3(inputs, s3_server):
    from keras_deeplab.inference.engines.beam import segment_with_beam

    client, options = s3_server
    client.create_bucket(Bucket="survey")
    chosen = [r for r in inputs["reference"] if r.endswith(".png")][:6]
    for relative in chosen:
        client.upload_file(str(inputs["root"] / relative), "survey", relative)
    arguments = ["s3://survey/images/**/*.png"]
    settings = jobs.JobSettings(
        model=str(inputs["model"]),
        out="s3://survey/masks",
        root=jobs.job_root(arguments),
        options=InferenceOptions(confidence=True),
    )
    one_process = {
        "direct_num_workers": "1",
        "direct_running_mode": "in_memory",
    }
    summary = segment_with_beam(arguments, settings, {**options, **one_process})
    assert (summary.written, summary.skipped, summary.failed) == (6, 0, 0)
    keys = {
        item["Key"]
        for item in client.list_objects_v2(Bucket="survey")["Contents"]
    }
    assert not [key for key in keys if ".partial" in key or ".records" in key]
    assert "masks/manifest.jsonl" in keys
    assert "masks/failed.jsonl" not in keys  # nothing failed
    for relative in chosen:
        mask, scores = inputs["reference"][relative]
        for suffix, expected in (
            ("_mask.png", mask),
            ("_confidence.png", scores),
        ):
            key = "masks/" + _output("", relative, suffix).as_posix()
            body = client.get_object(Bucket="survey", Key=key)["Body"].read()
            np.testing.assert_array_equal(
                np.asarray(Image.open(io.BytesIO(body))),
                expected,
                err_msg=key,
            )


def _python_block(after):
    """The first ```python block of docs/scale.md after the line `after`."""
    text = (Path(__file__).parents[1] / "docs" / "scale.md").read_text()
    rest = text[text.index(after) :]
    return rest.split("```python\n", 1)[1].split("```", 1)[0]


def test_documented_python_pipelines_run(inputs, tmp_path, monkeypatch):
    """docs/scale.md's two snippets, as written: our handler in a Beam
    pipeline of the user's, and `SegmentBatches` behind Ray's own reader."""
    import shutil

    chosen = [r for r in inputs["reference"] if r.endswith(".png")][:3]
    for relative in chosen:
        shutil.copy(inputs["root"] / relative, tmp_path / Path(relative).name)
    shutil.copy(inputs["model"], tmp_path / "my.keras")
    monkeypatch.chdir(tmp_path)
    images = [np.asarray(Image.open(Path(r).name)) for r in chosen]
    beam_snippet = _python_block("From Python, in your own pipeline")
    exec(beam_snippet, {"keyed_images": list(enumerate(images))})  # noqa: S102

    (tmp_path / "imgs").mkdir()
    for relative in chosen:
        shutil.move(Path(relative).name, tmp_path / "imgs")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        exec(_python_block("From Python, with Ray's own reader"), {})  # noqa: S102
    finally:
        ray.shutdown()
    for relative in chosen:
        stem = Path(relative).stem
        np.testing.assert_array_equal(
            _mask(tmp_path / "masks" / f"{stem}_mask.png"),
            inputs["reference"][relative][0],
        )
