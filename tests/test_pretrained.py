"""Presets: the registry, verified downloads from a real HTTP server on
127.0.0.1, one conversion into the cache, and `from_preset` with PyTorch
unimportable, checked against torchvision's own forward pass."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_deeplab.cli import main
from keras_deeplab.convert import ARCHS
from keras_deeplab.labels import VOC_CLASSES
from keras_deeplab.pretrained import (
    MODEL_PRESETS,
    Preset,
    checkpoint_model_file,
    preset_model_file,
    preset_rows,
)
from keras_deeplab.pretrained.download import (
    CACHE_ENV,
    DEADLINE_ENV,
    MIRROR_ENV,
    DownloadError,
    download,
    file_sha256,
    mirrored,
)
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import PicklePayload
from tests.http_server import closed_port_url, serving

REPO_ROOT = Path(__file__).resolve().parents[1]
RELATIVE_TOLERANCE = 1e-4  # of torchvision's logit range
MIN_AGREEMENT = 0.9999
TEST_PRESET = "test_lraspp_mobilenet_v3_large"
TEST_ARCH = "lraspp_mobilenet_v3_large"

# ---- the registry ----------------------------------------------------------


def test_every_preset_is_complete_and_consistent():
    for name, preset in MODEL_PRESETS.items():
        assert preset.name == name
        assert preset.arch in ARCHS, name
        assert preset.url.startswith("https://"), name
        assert preset.output_stride in (8, 16), name
        assert len(set(preset.class_names)) == len(preset.class_names) > 1
        assert preset.metric and preset.evaluation and preset.licence
        if preset.url.startswith("https://download.pytorch.org/"):
            # torch.hub's convention: <name>-<sha256 prefix>.pth; the full
            # digest agrees with it, and the byte size with torchvision's
            # `_file_size` (MiB, three decimals).
            assert preset.url.endswith(preset.file_name)
            prefix = preset.file_name.split("-")[-1].removesuffix(".pth")
            assert len(preset.sha256) == 64
            assert preset.sha256.startswith(prefix), name
            assert preset.class_names == VOC_CLASSES
            stated = {
                "deeplabv3_resnet50_coco": 160.515,
                "deeplabv3_resnet101_coco": 233.217,
                "deeplabv3_mobilenet_v3_large_coco": 42.301,
                "lraspp_mobilenet_v3_large_coco": 12.49,
            }[name]
            assert round(preset.size_bytes / 2**20, 3) == stated


def test_preset_rows_list_every_preset_uncached(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    rows = preset_rows()
    assert [row["name"] for row in rows] == list(MODEL_PRESETS)
    assert not any(row["cached"] for row in rows)


# ---- downloads -------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A folder with one small file, and where downloads go."""
    (tmp_path / "site").mkdir()
    data = os.urandom(50_000)
    (tmp_path / "site" / "weights.pth").write_bytes(data)
    return tmp_path / "site", tmp_path / "cache" / "weights.pth", data


def _leftovers(folder):
    return [p.name for p in Path(folder).rglob("*") if "partial" in p.name]


def test_download_verifies_and_is_cached(served):
    site, target, data = served
    digest = file_sha256(site / "weights.pth")
    with serving(site) as (url, requests):
        assert download(f"{url}/weights.pth", target, sha256=digest[:8]) == (
            target
        )
    assert target.read_bytes() == data and len(requests) == 1
    # The server is gone: the cached, verified copy is used.
    assert download(f"{url}/weights.pth", target, sha256=digest) == target


def test_a_hash_mismatch_keeps_nothing(served):
    site, target, _ = served
    with serving(site) as (url, _), pytest.raises(DownloadError) as info:
        download(f"{url}/weights.pth", target, sha256="0" * 64)
    message = str(info.value)
    assert "0" * 64 in message and file_sha256(site / "weights.pth") in message
    assert not target.exists() and not _leftovers(target.parent)


def test_404_cut_short_and_no_network_name_the_url(served):
    site, target, _ = served
    with serving(site, truncated={"weights.pth"}) as (url, _):
        with pytest.raises(DownloadError, match=r"HTTP 404 .*place the file"):
            download(f"{url}/missing.pth", target)
        with pytest.raises(DownloadError, match="stopped 25,000 bytes short"):
            download(f"{url}/weights.pth", target)
    offline = closed_port_url()
    with pytest.raises(DownloadError) as info:
        download(offline, target)
    assert offline in str(info.value) and str(target) in str(info.value)
    assert not target.exists() and not _leftovers(target.parent)


# ---- from_preset end to end ------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """torchvision's lraspp_mobilenet_v3_large (random weights and BN),
    saved in the legacy format of its 2019 files (the reader's harder
    case), named like torch.hub files."""
    from tests.torch_reference import deeplabv3, torch

    reference = deeplabv3(TEST_ARCH, aux_loss=False)
    site = tmp_path_factory.mktemp("site")
    raw = site / "raw.pth"
    torch.save(
        reference.state_dict(), raw, _use_new_zipfile_serialization=False
    )
    digest = file_sha256(raw)
    path = raw.rename(site / f"{TEST_ARCH}-{digest[:8]}.pth")
    return reference, path, digest


_CHILD = """
import json, sys
sys.modules["torch"] = None  # `import torch` now fails
import numpy as np
import keras_deeplab as kd
from keras_deeplab.pretrained import MODEL_PRESETS, Preset
fields = json.loads(sys.argv[1])
preset = Preset(**{**fields, "class_names": tuple(fields["class_names"])})
MODEL_PRESETS[preset.name] = preset
images, out, url = np.load(sys.argv[2]), sys.argv[3], sys.argv[4]
model = kd.from_preset(preset.name)
by_url = kd.from_preset(url, arch=preset.arch, sha256=preset.sha256)
np.savez(out, preset=model.predict_on_batch(images),
         url=by_url.predict_on_batch(images))
print("CLASS NAMES", json.dumps(list(model.spec.names)))
"""


def _run_child(preset, images_path, out, cache, *, url, mirror=None):
    environment = {**os.environ, CACHE_ENV: str(cache)}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    environment.pop(MIRROR_ENV, None)
    if mirror:
        environment[MIRROR_ENV] = mirror
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps(dataclasses.asdict(preset)),
            str(images_path),
            str(out),
            url,
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def _preset(path, digest, url):
    return Preset(
        name=TEST_PRESET,
        url=url,
        file_name=path.name,
        sha256=digest[:8],
        arch=TEST_ARCH,
        output_stride=16,
        class_names=VOC_CLASSES,
        dataset="random weights",
        metric="none",
        evaluation="none",
        source="tests",
        licence="tests",
        size_bytes=None,
    )


@pytest.fixture(scope="module")
def preset_cache(torchvision_file, tmp_path_factory):
    """The preset downloaded from a mirror and converted, with PyTorch
    unimportable; then run again with the server stopped."""
    from tests.torch_reference import torch_logits

    reference, path, digest = torchvision_file
    work = tmp_path_factory.mktemp("preset")
    images = np.random.default_rng(0).uniform(0, 255, (2, 97, 129, 3))
    images = images.astype(np.float32)
    np.save(work / "images.npy", images)
    # The registry URL is unreachable: the bytes come from the mirror.
    preset = _preset(path, digest, closed_port_url(path.name))
    cache = work / "cache"
    with serving(path.parent) as (server, requests):
        url = f"{server}/{path.name}"
        first = _run_child(
            preset,
            work / "images.npy",
            work / "first.npz",
            cache,
            url=url,
            mirror=server,
        )
    # One download for the preset (from the mirror), one for the URL.
    assert requests == [f"/{path.name}"] * 2
    second = _run_child(
        preset, work / "images.npy", work / "second.npz", cache, url=url
    )
    return {
        "reference": torch_logits(reference, images)["out"],
        "first": np.load(work / "first.npz"),
        "second": np.load(work / "second.npz"),
        "stdout": (first, second),
        "cache": cache,
        "preset": preset,
    }


@pytest.mark.slow
def test_from_preset_without_torch_matches_torchvision(preset_cache):
    reference = preset_cache["reference"]
    scale = float(reference.max() - reference.min())
    for run in ("first", "second"):
        for source in ("preset", "url"):
            logits = preset_cache[run][source]
            worst = np.abs(logits - reference).max()
            agreement = (logits.argmax(-1) == reference.argmax(-1)).mean()
            print(
                f"{run} {source}: {worst / scale:.2e} of the range, "
                f"{agreement:.6f} argmax agreement"
            )
            assert worst <= RELATIVE_TOLERANCE * scale
            assert agreement >= MIN_AGREEMENT
    first, second = preset_cache["stdout"]
    assert "downloading" in first and "converting" in first
    # No network and no conversion the second time.
    assert "downloading" not in second and "converting" not in second
    assert f"CLASS NAMES {json.dumps(list(VOC_CLASSES))}" in second


@pytest.fixture
def with_test_preset(preset_cache, monkeypatch):
    """The converted test preset in the registry and the cache, in-process."""
    monkeypatch.setenv(CACHE_ENV, str(preset_cache["cache"]))
    monkeypatch.setitem(MODEL_PRESETS, TEST_PRESET, preset_cache["preset"])
    return preset_cache


@pytest.mark.slow
def test_cli_presets_and_predict_take_a_preset(with_test_preset, tmp_path):
    from PIL import Image

    assert main(["presets"]) == 0
    row = next(r for r in preset_rows() if r["name"] == TEST_PRESET)
    assert row["cached"]
    image = np.random.default_rng(1).integers(0, 255, (65, 81, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    status = main(
        [
            "predict",
            str(tmp_path / "photo.png"),
            "--model",
            TEST_PRESET,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert status == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "photo_mask.png"))
    assert mask.shape == (65, 81) and mask.max() < len(VOC_CLASSES)


@pytest.mark.slow
def test_fine_tuning_from_a_preset_keeps_all_but_the_classifier(
    with_test_preset,
):
    import keras_deeplab as kd

    base = kd.from_preset(TEST_PRESET)
    tuned = kd.from_preset(TEST_PRESET, num_classes=4, output_stride=8)
    assert tuned.spec.num_classes == 4 and tuned.spec.output_stride == 8
    assert tuned.spec.class_names is None
    for name in ("conv", "expanded_conv_12_depthwise", "lraspp_cbr_conv"):
        np.testing.assert_array_equal(
            tuned.get_layer(name).get_weights()[0],
            base.get_layer(name).get_weights()[0],
        )
    for classifier in ("head_classifier", "head_low_classifier"):
        assert tuned.get_layer(classifier).get_weights()[0].shape[-1] == 4


# ---- what goes wrong -------------------------------------------------------


def _cli_error(argv, capsys):
    assert main([str(arg) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    (line,) = captured.err.strip().splitlines()
    return line


def test_unknown_preset_names_the_closest(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _cli_error(
        [
            "predict",
            "x.png",
            "--model",
            "deeplabv3_resnet50_cocoo",
            "--out",
            "o",
        ],
        capsys,
    )
    assert "unknown preset 'deeplabv3_resnet50_cocoo'" in line
    assert "Did you mean deeplabv3_resnet50_coco" in line


def test_bad_downloads_and_files_are_one_line_and_leave_no_cache(
    tmp_path, monkeypatch
):
    import keras_deeplab as kd
    from tests.torch_reference import torch

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    site = tmp_path / "site"
    site.mkdir()
    torch.save({"conv.weight": torch.ones(2, 2)}, site / "other.pth")
    marker = tmp_path / "payload-ran"
    torch.save(
        {"w": torch.ones(1), "x": PicklePayload(marker)}, site / "evil.pth"
    )
    arch = "deeplabv3_resnet50"
    with serving(site, truncated={"other.pth"}) as (url, _):
        cases = {
            f"{url}/missing.pth": "HTTP 404",
            f"{url}/other.pth": "stopped",
            closed_port_url(): "cannot download",
        }
        for source, expected in cases.items():
            with pytest.raises(DownloadError, match=expected):
                kd.from_preset(source, arch=arch)
    with serving(site) as (url, _):
        with pytest.raises(DownloadError, match="was expected"):
            kd.from_preset(f"{url}/other.pth", arch=arch, sha256="ab" * 32)
        with pytest.raises(ValueError, match="does not fit deeplabv3_resnet50"):
            kd.from_preset(f"{url}/other.pth", arch=arch)
        with pytest.raises(ValueError, match="refused: its pickle names"):
            kd.from_preset(f"{url}/evil.pth", arch=arch)
        with pytest.raises(ValueError, match="pass arch="):
            kd.from_preset(f"{url}/evil.pth")
    assert not marker.exists()
    converted = cache / "models"
    assert not converted.exists() or not any(converted.iterdir())
    assert not _leftovers(cache)


def test_preset_model_file_names_the_cache_for_offline_use(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    preset = dataclasses.replace(
        MODEL_PRESETS["deeplabv3_resnet50_coco"], url=closed_port_url()
    )
    monkeypatch.setitem(MODEL_PRESETS, preset.name, preset)
    with pytest.raises(DownloadError) as info:
        preset_model_file(preset.name)
    expected = tmp_path / "downloads" / preset.file_name
    assert f"place the file at {str(expected)!r} by hand" in str(info.value)


# ---- the adversarial pass of 2026-12 and the first-hour round ---------------


def test_a_trickling_server_meets_the_deadline(served, monkeypatch):
    """DL-09: a server sending a byte every 0.2 s never lets a read time
    out; the whole download has a deadline, and nothing is kept."""
    site, target, _ = served
    monkeypatch.setenv(DEADLINE_ENV, "1.5")
    with serving(site, trickled={"weights.pth"}) as (url, _):
        with pytest.raises(DownloadError, match="deadline of 1.5 s"):
            download(f"{url}/weights.pth", target)
    assert not target.exists() and not _leftovers(target.parent)


_KILLED_DOWNLOAD = """
import sys
from keras_deeplab.pretrained.download import download
download(sys.argv[1], sys.argv[2])
"""


def test_a_killed_download_leaves_nothing_once_the_next_one_runs(served):
    """A download killed mid-way leaves its temporary file (nothing can run
    at SIGKILL); the next download into the folder removes it, whatever
    file it fetches, and keeps those of a live download."""
    import signal
    import time

    site, target, data = served
    (site / "other.pth").write_bytes(b"PK\x03\x04other")
    with serving(site, trickled={"weights.pth"}) as (url, _):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _KILLED_DOWNLOAD,
                f"{url}/weights.pth",
                str(target),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        deadline = time.monotonic() + 60
        while not _leftovers(target.parent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _leftovers(target.parent)
        child.send_signal(signal.SIGKILL)
        child.wait()
        download(f"{url}/other.pth", target.parent / "other.pth")
    assert not _leftovers(target.parent) and not target.exists()


def test_a_mirror_must_be_a_url(tmp_path, monkeypatch, capsys):
    """DL-12/13, CLI-03: a bare path was `ValueError: unknown url type`;
    a file:// URL is a mirror too."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "w.pth").write_bytes(b"PK\x03\x04")
    monkeypatch.setenv(MIRROR_ENV, str(site))
    with pytest.raises(UserInputError, match="not a URL.*file://"):
        mirrored("https://example.com/w.pth", "w.pth")
    monkeypatch.setenv(MIRROR_ENV, site.as_uri())
    url = mirrored("https://example.com/w.pth", "w.pth")
    assert download(url, tmp_path / "cache" / "w.pth").read_bytes() == (
        b"PK\x03\x04"
    )
    assert "was not verified" in capsys.readouterr().out


def test_an_unhashed_download_must_be_a_torch_file(tmp_path, monkeypatch):
    """DL-05: a sign-in page served as model.pth was kept, and every later
    call failed on it without naming the cached file."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "model.pth").write_text("<!DOCTYPE html><title>Sign in</title>")
    with serving(site) as (url, _):
        with pytest.raises(DownloadError, match="not a PyTorch checkpoint"):
            checkpoint_model_file(
                f"{url}/model.pth", arch="lraspp_mobilenet_v3_large"
            )
    assert not list((tmp_path / "cache").rglob("model.pth"))
    assert not _leftovers(tmp_path / "cache")


def _unreachable_preset(monkeypatch, tmp_path, **fields):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    preset = dataclasses.replace(
        MODEL_PRESETS["lraspp_mobilenet_v3_large_coco"],
        url=closed_port_url(),
        **fields,
    )
    monkeypatch.setitem(MODEL_PRESETS, preset.name, preset)
    return preset


def test_a_hand_placed_file_that_fails_its_check_is_kept_and_named(
    tmp_path, monkeypatch
):
    """A file placed by hand, as the offline error says, whose hash is not
    the publisher's was deleted ("downloading it again"); it is moved aside
    and named, and the error says why."""
    preset = _unreachable_preset(monkeypatch, tmp_path)
    placed = tmp_path / "downloads" / preset.file_name
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"PK\x03\x04 my fine-tuned copy")
    with pytest.raises(DownloadError) as info:
        preset_model_file(preset.name)
    message = str(info.value)
    aside = placed.with_name(placed.name + ".rejected")
    assert f"moved to {str(aside)!r}" in message
    assert f"expected {preset.sha256}" in message
    assert aside.read_bytes() == b"PK\x03\x04 my fine-tuned copy"
    assert "\n" not in message


def test_your_own_copy_of_a_preset_is_looked_for_under_its_hash(
    tmp_path, monkeypatch
):
    """from_preset(name, sha256=...) checks that hash, not the
    publisher's, at a place of its own (a prefix was silently ignored)."""
    preset = _unreachable_preset(monkeypatch, tmp_path)
    mine = "ab" * 32
    with pytest.raises(DownloadError) as info:
        preset_model_file(preset.name, sha256=mine)
    expected = tmp_path / "downloads" / mine[:16] / preset.file_name
    assert f"place the file at {str(expected)!r}" in str(info.value)


def test_a_keras_file_is_checked_against_a_given_hash(tmp_path):
    """AP-14: from_preset("m.keras", sha256=...) loaded unchecked."""
    import keras_deeplab as kd

    path = tmp_path / "m.keras"
    path.write_bytes(b"PK\x03\x04 not checked before")
    with pytest.raises(UserInputError, match="m.keras.*00000000 was expected"):
        kd.from_preset(path, sha256="00000000")


@pytest.mark.slow
def test_a_cached_conversion_that_changed_is_converted_again(
    with_test_preset, capsys
):
    """CA-01: a corrupt cached model was sticky. Each conversion's record
    holds its source's and its own SHA-256; a file that no longer matches
    is moved aside, said so, and converted again from the download."""
    import keras_deeplab as kd
    from keras_deeplab.pretrained.cache import converted_path

    target = converted_path(TEST_PRESET)
    record = target.with_suffix(".json")
    assert json.loads(record.read_text())["source_sha256"].startswith(
        with_test_preset["preset"].sha256
    )
    target.write_bytes(target.read_bytes() + b"changed")
    model = kd.from_preset(TEST_PRESET)
    out = capsys.readouterr().out
    assert "failed its check (it changed after it was written)" in out
    assert target.with_name(target.name + ".rejected").is_file()
    assert json.loads(record.read_text())["keras_sha256"] == file_sha256(target)
    assert model.spec.names == VOC_CLASSES


@pytest.mark.slow
def test_your_own_checkpoint_keeps_the_class_names(with_test_preset, tmp_path):
    """Your own (re-hosted or fine-tuned) copy of a preset's layout: by the
    preset name and its hash, or by path with arch= and class_names=, or
    through convert-torchvision --class-names; each keeps the names
    (these routes gave class_0 ... class_20)."""
    import keras_deeplab as kd
    from tests.torch_reference import deeplabv3, torch

    state = deeplabv3(TEST_ARCH, aux_loss=False).state_dict()
    path = tmp_path / "mine.pth"  # "fine-tuned": every float moved a little
    torch.save(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()},
        path,
    )
    digest = file_sha256(path)
    preset = with_test_preset["preset"]
    placed = with_test_preset["cache"] / "downloads" / digest[:16]
    placed.mkdir(parents=True)
    (placed / preset.file_name).write_bytes(path.read_bytes())
    mine = kd.from_preset(TEST_PRESET, sha256=digest)
    publisher = kd.from_preset(TEST_PRESET)
    assert mine.spec.names == VOC_CLASSES
    assert mine.spec.output_stride == preset.output_stride
    assert not np.array_equal(
        mine.get_layer("conv").get_weights()[0],
        publisher.get_layer("conv").get_weights()[0],
    )
    by_path = kd.from_preset(path, arch=TEST_ARCH, class_names=VOC_CLASSES)
    assert by_path.spec.names == VOC_CLASSES
    out = tmp_path / "converted.keras"
    argv = ["convert-torchvision", str(path), "--arch", TEST_ARCH]
    assert main([*argv, "--class-names", TEST_PRESET, "--out", str(out)]) == 0
    assert kd.from_preset(out).spec.names == VOC_CLASSES
