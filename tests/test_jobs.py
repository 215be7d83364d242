"""What every engine's job shares (`inference.jobs`, `inference.batch`):
inputs and their output paths, skipping, failures, the manifest, and the
CLI's refusals. The engines themselves: tests/test_engines.py."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.cli import main
from keras_deeplab.inference import jobs
from keras_deeplab.inference.batch import (
    InferenceOptions,
    class_maps,
    segment_images,
)
from keras_deeplab.inference.probabilities import (
    confidence_map,
    predict_probabilities,
)
from keras_deeplab.models.derived import inference_model
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import TINY, random_images


@pytest.fixture(scope="module")
def model():
    return inference_model(DeepLabV3(3, **TINY))


def _png(path, height=20, width=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize(
    ("arguments", "root"),
    [
        (["/d/a/x.jpg", "/d/a/y.jpg"], "/d/a"),
        (["/d/a/x.jpg", "/d/b/x.jpg"], "/d"),
        (["/d/**/*.jpg"], "/d"),
        (["/d/a/*.png", "/d/b/c/x.png"], "/d"),
        (["gs://bucket/in/**/*.png"], "gs://bucket/in"),
        (["s3://b/x/a.png", "s3://b/y/a.png"], "s3://b"),
    ],
)
def test_the_root_is_the_deepest_common_folder(arguments, root):
    assert jobs.job_root(arguments) == root


def test_inputs_mixing_file_systems_are_refused():
    with pytest.raises(UserInputError, match="mix file systems"):
        jobs.job_root(["/d/x.png", "gs://b/y.png"])


def test_same_names_in_two_folders_keep_their_folders():
    settings = jobs.JobSettings(
        model="m",
        out="/out",
        root="/d",
        options=InferenceOptions(confidence=True),
    )
    first = jobs.job_input("/d/a/x.jpg", "/d")
    second = jobs.job_input("/d/b/x.jpg", "/d")
    assert jobs.output_uris(settings, first) == [
        "/out/a/x_mask.png",
        "/out/a/x_confidence.png",
    ]
    assert jobs.output_uris(settings, second)[0] == "/out/b/x_mask.png"
    remote = jobs.JobSettings(model="m", out="gs://o/masks/", root="gs://i")
    item = jobs.job_input("gs://i/a/b.png", "gs://i")
    assert jobs.output_uris(remote, item) == ["gs://o/masks/a/b_mask.png"]


def test_patterns_expand_once_each_and_an_empty_one_is_named(tmp_path):
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "a" / "b" / "y.png")
    pattern = str(tmp_path / "**" / "*.png")
    inputs = jobs.expand_inputs(
        [pattern, str(tmp_path / "a" / "x.png")], jobs.LocalFiles()
    )
    assert [i.relative for i in inputs] == ["a/b/y.png", "a/x.png"]
    with pytest.raises(UserInputError, match=r"'\S*\*\.jpg' matches no file"):
        jobs.expand_inputs([str(tmp_path / "*.jpg")], jobs.LocalFiles())


def test_prepare_skips_done_inputs_and_reports_bad_ones(tmp_path):
    files = jobs.LocalFiles()
    settings = jobs.JobSettings(
        model="m",
        out=str(tmp_path / "out"),
        root=str(tmp_path),
        options=InferenceOptions(max_pixels=500),
    )
    good = jobs.job_input(
        str(_png(tmp_path / "good.png", 20, 20)), str(tmp_path)
    )
    record, image = jobs.prepare(settings, good, files)
    assert record is None and image.shape == (20, 20, 3)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "good_mask.png").write_bytes(b"done before")
    record, image = jobs.prepare(settings, good, files)
    assert record["skipped"] and image is None
    redo = jobs.JobSettings(**{**vars(settings), "overwrite": True})
    assert jobs.prepare(redo, good, files)[0] is None

    big = jobs.job_input(str(_png(tmp_path / "big.png", 30, 20)), str(tmp_path))
    record, _ = jobs.prepare(settings, big, files)
    assert "20x30 pixels" in record["error"] and "--tile" in record["error"]
    (tmp_path / "bad.png").write_bytes(b"GIF89a not really")
    bad = jobs.job_input(str(tmp_path / "bad.png"), str(tmp_path))
    record, _ = jobs.prepare(settings, bad, files)
    assert "bad.png" in record["error"] and "unreadable" in record["error"]
    missing = jobs.job_input(str(tmp_path / "gone.png"), str(tmp_path))
    assert "gone.png" in jobs.prepare(settings, missing, files)[0]["error"]


def test_manifest_and_a_failure_list_only_when_something_failed(tmp_path):
    files = jobs.LocalFiles()
    records = [
        {"input": "b", "outputs": ["b_mask.png"], "skipped": True},
        {"input": "c", "error": "unreadable"},
        {"input": "a", "outputs": ["a_mask.png"], "size": [2, 3]},
    ]
    summary = jobs.write_manifest(str(tmp_path), records, files)
    assert summary.line == (
        "3 images: 1 written, 1 skipped (done before), 1 failed "
        "(see failed.jsonl)"
    )
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["input"] for line in lines] == ["a", "b", "c"]
    assert (tmp_path / "failed.jsonl").read_text().count("\n") == 1
    summary = jobs.write_manifest(str(tmp_path), records[:1], files)
    assert (
        summary.line == "1 image: 0 written, 1 skipped (done before), 0 failed"
    )
    assert not (tmp_path / "failed.jsonl").exists()  # the stale one went


def test_mixed_sizes_in_one_batch_equal_one_at_a_time(model):
    options = InferenceOptions(confidence=True)
    sizes = [(33, 47), (20, 20), (33, 47), (41, 29)]
    images = [
        random_images(1, *size, seed=i)[0].astype(np.uint8)
        for i, size in enumerate(sizes)
    ]
    results = segment_images(model, enumerate(images), options)
    assert [r.key for r in results] == [0, 1, 2, 3]
    for image, result in zip(images, results, strict=True):
        probabilities = predict_probabilities(model, image[None])[0]
        ids = np.asarray(Image.open(io.BytesIO(result.mask_png)))
        scores = np.asarray(Image.open(io.BytesIO(result.confidence_png)))
        np.testing.assert_array_equal(ids, probabilities.argmax(-1))
        np.testing.assert_array_equal(scores, confidence_map(probabilities))
        assert result.size == image.shape[:2]
        assert (
            sum(result.pixels_per_class.values())
            == image.shape[0] * image.shape[1]
        )


def test_more_than_256_classes_write_16_bit_masks():
    import keras

    images = keras.Input((None, None, 3))
    brightness = keras.layers.Conv2D(1, 1, kernel_initializer="ones")(images)
    distance = brightness * (299 / 765) - keras.ops.arange(300.0)
    model = keras.Model(images, -keras.ops.abs(distance))  # ids 0 .. 299
    image = random_images(1, 12, 10)[0].astype(np.uint8)
    (result,) = segment_images(model, [("k", image)], InferenceOptions())
    ids, _ = class_maps(model, image[None], InferenceOptions())
    decoded = np.asarray(Image.open(io.BytesIO(result.mask_png)))
    assert ids.max() > 255
    np.testing.assert_array_equal(decoded, ids[0])


def test_local_predict_takes_patterns_and_writes_confidence(model, tmp_path):
    model.save(tmp_path / "m.keras")
    _png(tmp_path / "in" / "x.png", 33, 47)
    pattern = str(tmp_path / "in" / "*.png")
    status = main(
        ["predict", pattern, "--model", str(tmp_path / "m.keras"),
         "--out", str(tmp_path / "out"), "--confidence"]
    )  # fmt: skip
    assert not status
    image = np.asarray(Image.open(tmp_path / "in" / "x.png"))
    probabilities = predict_probabilities(model, image[None])[0]
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / "x_confidence.png")),
        confidence_map(probabilities),
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--engine", "beam", "--probabilities"],
            "--probabilities: --engine beam",
        ),
        (
            ["--engine-option", "runner=DataflowRunner"],
            "apply to --engine beam",
        ),
        (["--engine", "ray", "--out", "s3://b/out"], "use --engine beam"),
        (
            ["--engine", "ray", "--engine-option", "runner=x"],
            "not a Ray option",
        ),
        (["--engine", "beam", "--model", "nosuch.keras"], "does not exist"),
    ],
)
def test_engine_refusals_are_one_line(tmp_path, capsys, flags, message):
    image = _png(tmp_path / "x.png")
    DeepLabV3(3, **TINY).save(tmp_path / "m.keras")
    argv = ["predict", str(image), "--model", str(tmp_path / "m.keras")]
    argv += ["--out", str(tmp_path / "out"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_object_store_inputs_need_the_beam_engine(tmp_path, capsys):
    assert main(["predict", "gs://bucket/*.png", "--model", "m.keras",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "use --engine beam" in capsys.readouterr().err


def test_engine_option_needs_key_and_value(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "x.png", "--model", "m", "--out", "o",
              "--engine-option", "runner"])  # fmt: skip
    assert "'runner' is not KEY=VALUE" in capsys.readouterr().err
