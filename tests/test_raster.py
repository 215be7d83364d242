"""Rasters streamed through the sliding window (inference.raster): equal to
the in-memory window bit for bit, georeferencing and nodata kept, memory
independent of the raster's height, and clear refusals. GeoTIFFs are made
by the tests with rasterio itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402

from keras_deeplab.cli import USER_ERROR_EXIT, main  # noqa: E402
from keras_deeplab.inference.raster import (  # noqa: E402
    NAMES_TAG,
    RasterOptions,
    _to_rgb,
    segment_raster,
)
from keras_deeplab.inference.tiling import (  # noqa: E402
    Tiling,
    sliding_window_predict,
)
from tests.helpers import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 4_000_000.0, 0.3, 0.3)
NAMES = ("background", "building", "road")


@pytest.fixture(scope="module")
def model():
    from keras_deeplab import DeepLabV3

    return DeepLabV3(3, class_names=NAMES, **TINY)


def _write(path, bands, *, nodata=None, crs=CRS, transform=TRANSFORM):
    count, height, width = bands.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": str(bands.dtype),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as target:
        target.write(bands)
    return path


def _scene(height, width, seed=0):
    """Smooth RGB fields with edges (compressible, like imagery)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 4 * np.pi, height)[:, None]
    columns = np.linspace(0, 6 * np.pi, width)[None, :]
    bands = [
        127
        + 100 * np.sin(rows * (1 + c) + columns * (2 - c))
        + rng.normal(0, 8, (height, width))
        for c in range(3)
    ]
    return np.clip(bands, 0, 255).astype(np.uint8)


def _read(path):
    with rasterio.open(path) as source:
        return source.read(1), source.profile, source.tags(), source


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [
        (300, 451, (128, 128)),  # uneven edges in both directions
        (97, 140, (256, 256)),  # a tile larger than the raster
        (260, 200, (96, 160)),  # a non-square tile
    ],
)
def test_streamed_output_equals_the_in_memory_window(
    model, tmp_path, height, width, tile
):
    bands = _scene(height, width)
    path = _write(tmp_path / "scene.tif", bands)
    tiling = Tiling(tile, overlap=0.25, window="gaussian")
    (classes,) = segment_raster(model, path, tmp_path, tiling)
    got, profile, tags, _ = _read(classes)
    expected = sliding_window_predict(model, bands.transpose(1, 2, 0), tiling)
    np.testing.assert_array_equal(got, expected)
    assert profile["crs"] == rasterio.crs.CRS.from_string(CRS)
    assert profile["transform"] == TRANSFORM
    assert (profile["width"], profile["height"]) == (width, height)
    assert json.loads(tags[NAMES_TAG]) == list(NAMES)


@pytest.mark.slow
def test_a_4000_by_3000_orthophoto_equals_the_in_memory_window(model, tmp_path):
    bands = _scene(3000, 4000, seed=1)
    path = _write(tmp_path / "ortho.tif", bands)
    tiling = Tiling((512, 512), overlap=0.25)
    classes, confidence = segment_raster(
        model, path, tmp_path, tiling, confidence=True
    )
    got, profile, _, _ = _read(classes)
    expected = sliding_window_predict(model, bands.transpose(1, 2, 0), tiling)
    np.testing.assert_array_equal(got, expected)
    assert profile["blockxsize"] == 256 and profile["compress"] == "deflate"
    with rasterio.open(classes) as source:
        assert source.overviews(1)  # cloud-optimized: with overviews
    scores, _, _, _ = _read(confidence)
    assert scores.dtype == np.uint8 and scores.max() > 0


def test_multispectral_uint16_with_nodata(model, tmp_path):
    """A 4-band uint16 raster with a nodata border: bands 3,2,1 scaled by
    their percentiles; nodata pixels are 255 (ignored) in the output, whole
    nodata tiles are not run, and the rest equals the in-memory window."""
    height, width = 300, 420
    rgb = _scene(height, width, seed=2).astype(np.uint16) * 16
    bands = np.stack([rgb[2], rgb[1], rgb[0], rgb[0] // 2])  # B, G, R, NIR
    nodata = 0
    bands[:, :, :130] = nodata  # a border wider than a tile
    bands[:, :20] = nodata
    path = _write(tmp_path / "multi.tif", bands, nodata=nodata)
    options = RasterOptions(bands=(3, 2, 1))
    tiling = Tiling((128, 128))
    classes, confidence = segment_raster(
        model, path, tmp_path, tiling, options=options, confidence=True
    )
    got, profile, _, _ = _read(classes)
    assert profile["nodata"] == 255
    valid = (bands[:3] != nodata).all(axis=0)
    assert (got[~valid] == 255).all() and (got[valid] < 3).all()
    with rasterio.open(path) as raster:
        from keras_deeplab.inference.raster import _value_ranges

        ranges = _value_ranges(raster, (3, 2, 1), options)
    image = _to_rgb(bands[[2, 1, 0]], ranges)
    expected = sliding_window_predict(model, image, tiling)
    # Tiles entirely in the border were not run: only nodata pixels differ.
    np.testing.assert_array_equal(got[valid], expected[valid])
    scores, _, _, _ = _read(confidence)
    assert (scores[~valid] == 0).all()
    with rasterio.open(classes) as source:
        colours = source.colormap(1)
    assert colours[1][:3] == (128, 0, 0)  # the palette GIS tools show


_MEASURE = """
import sys
import numpy as np
import rasterio
from rasterio.transform import from_origin
from keras_deeplab import DeepLabV3
from keras_deeplab.inference.raster import segment_raster
from keras_deeplab.inference.tiling import Tiling
from keras_deeplab.utils.memory import peak_rss_mb
height, width = int(sys.argv[1]), int(sys.argv[2])
path = sys.argv[3]
rows = np.arange(height, dtype=np.float32)[:, None]
with rasterio.open(path, "w", driver="GTiff", width=width, height=height,
                   count=3, dtype="uint8", tiled=True, compress="deflate",
                   crs="EPSG:32633",
                   transform=from_origin(0, 0, 1, 1)) as target:
    for top in range(0, height, 512):
        count = min(512, height - top)
        band = ((rows[top:top + count] + np.arange(width)) % 256)
        window = rasterio.windows.Window(0, top, width, count)
        target.write(np.stack([band] * 3).astype(np.uint8), window=window)
model = DeepLabV3(3, backbone_width=8, head_filters=16)
model.predict_on_batch(np.zeros((1, 512, 512, 3), np.float32))
before = peak_rss_mb()  # VmHWM: ru_maxrss would be the forking parent's
segment_raster(model, path, sys.argv[4], Tiling((512, 512)))
after = peak_rss_mb()
print("GROWTH", after - before)
"""


def _peak_growth_mb(tmp_path, height, width):
    out = tmp_path / f"out_{height}"
    out.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            str(height),
            str(width),
            str(tmp_path / f"tall_{height}.tif"),
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return float(run.stdout.split("GROWTH")[-1])


@pytest.mark.slow
def test_peak_memory_does_not_depend_on_the_rasters_height(tmp_path):
    """A 24,000 x 1,000 raster (72 MB of RGB; 288 MB as the float32 image
    the in-memory window tiles) segments with the memory of a 2,400-row
    one: the rows of one tile band are in memory, not the raster."""
    short = _peak_growth_mb(tmp_path, 2400, 1000)
    tall = _peak_growth_mb(tmp_path, 24000, 1000)
    print(f"peak growth: {short:.0f} MB (2,400 rows), {tall:.0f} MB (24,000)")
    assert tall < short + 40, (short, tall)
    # Less than the float32 image the in-memory window would tile.
    assert tall < 24000 * 1000 * 3 * 4 / 2**20


def test_refusals_name_the_raster_and_what_is_wrong(model, tmp_path, capsys):
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    scene = _write(tmp_path / "scene.tif", _scene(64, 80))
    flat = _write(tmp_path / "flat.tif", _scene(64, 80), crs=None)
    predict = ["predict", "--model", str(model_path), "--out"]

    def error(*argv):
        assert main([*predict, str(tmp_path / "out"), *map(str, argv)]) == (
            USER_ERROR_EXIT
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    line = error(scene, "--bands", "1,2,5")
    assert "--bands 1,2,5 does not fit raster" in line and "has 3 band" in line
    line = error(flat)
    assert "flat.tif" in line and "has no CRS" in line
    assert (
        main([*predict, str(tmp_path / "out"), str(flat), "--allow-no-crs"])
        == 0
    )
    line = error(tmp_path / "p.png", "--bands", "3,2,1")
    assert "--bands apply to rasters" in line
    # An output folder that cannot be written (a file stands in its way:
    # root writes into read-only folders).
    (tmp_path / "taken").write_text("")
    assert main([*predict, str(tmp_path / "taken" / "out"), str(scene)]) == (
        USER_ERROR_EXIT
    )
    assert "cannot be created" in capsys.readouterr().err
