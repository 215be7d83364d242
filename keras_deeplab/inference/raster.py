"""Rasters of any size: a GeoTIFF (or anything rasterio opens) segmented in
a sliding window that reads the rows it needs and writes the rows it has
finished, with the input's georeferencing.

Memory does not depend on the raster's height: the rows of one tile band
(tile height x raster width x bands) are read at a time, the blended
probabilities of one band are kept (`tiling.finished_rows`), and finished
rows go straight into the output file. Needs the `geo` extra (rasterio,
whose wheels bundle GDAL).

The output is a GeoTIFF with the input's CRS, transform and size: one band
of class ids (uint8; uint16 above 255 classes), nodata 255 (65535) where
the input was nodata or masked, a colour table and the class names in its
tags, so GIS tools show a legend; written tiled and compressed under a
temporary name, then made a Cloud-Optimized GeoTIFF (GDAL's COG driver,
with overviews) and renamed into place. `--confidence` adds
`<stem>_confidence.tif` (uint8: the top softmax probability x 255).
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from keras_deeplab.inference.probabilities import confidence_map
from keras_deeplab.inference.tiling import finished_rows
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.models.derived import inference_model
from keras_deeplab.utils.atomic import atomic_file
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.visualize.masks import class_palette

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
CLASSES_SUFFIX = "_classes.tif"
CONFIDENCE_SUFFIX = "_confidence.tif"
NAMES_TAG = "CLASS_NAMES"
# Value scaling of non-8-bit bands: the 2nd and 98th percentile of each band
# over a decimated read of at most this many pixels, mapped to 0 and 255.
PERCENTILES = (2.0, 98.0)
_SAMPLE_PIXELS = 1024 * 1024
_BLOCK = 256  # output tiles, pixels
_GDAL_CACHE_MB = 64
_CREATION = {"compress": "deflate", "predictor": 2}


@dataclasses.dataclass(frozen=True)
class RasterOptions:
    """How a raster is read: which bands (1-based, as GDAL counts them)
    make the RGB input, and how values map to 0..255."""

    bands: tuple | None = None  # None: 1, 2, 3
    value_range: tuple | None = None  # (low, high) for every band; None:
    # 8-bit bands as they are, others by PERCENTILES
    allow_no_crs: bool = False  # write an output that is not on a map


def is_raster(path) -> bool:
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def _rasterio():
    try:
        import rasterio
        import rasterio.shutil  # the COG copy
    except ImportError as err:
        raise UserInputError(
            "reading rasters needs rasterio: pip install -e '.[geo]' (or "
            "pip install rasterio)."
        ) from err
    return rasterio


def _check_source(source, path, options):
    bands = options.bands or (1, 2, 3)
    if len(bands) != 3 or any(not 1 <= band <= source.count for band in bands):
        raise UserInputError(
            f"--bands {','.join(map(str, bands))} does not fit raster "
            f"{str(path)!r}, which has {source.count} band(s); expected "
            f"three band numbers from 1 to {source.count}, e.g. --bands "
            "3,2,1 for a red-green-blue order."
        )
    if source.crs is None and not options.allow_no_crs:
        raise UserInputError(
            f"raster {str(path)!r} has no CRS: its segmentation could not be "
            "placed on a map. Give it one (gdal_edit.py -a_srs EPSG:...), or "
            "pass --allow-no-crs to write pixel coordinates only."
        )
    return bands


def _value_ranges(source, bands, options):
    """(low, high) per band: given, none for 8-bit bands, else the
    PERCENTILES of a decimated read without nodata."""
    if options.value_range is not None:
        return [tuple(options.value_range)] * len(bands)
    if all(source.dtypes[band - 1] == "uint8" for band in bands):
        return [None] * len(bands)
    pixels = source.width * source.height
    step = max(1, int(np.ceil(np.sqrt(pixels / _SAMPLE_PIXELS))))
    shape = (
        len(bands),
        max(1, source.height // step),
        max(1, source.width // step),
    )
    sample = source.read(bands, out_shape=shape, masked=True)
    ranges = []
    for values in sample:
        valid = values.compressed()
        if valid.size == 0:
            ranges.append((0.0, 1.0))
            continue
        low, high = np.percentile(valid, PERCENTILES)
        ranges.append((float(low), float(max(high, low + 1e-6))))
    return ranges


def _to_rgb(values, ranges):
    """(bands, rows, width) raw values -> (rows, width, 3) float32 0..255."""
    planes = []
    for plane, value_range in zip(values, ranges, strict=True):
        plane = plane.astype(np.float32)
        if value_range is not None:
            low, high = value_range
            plane = np.clip((plane - low) * (255.0 / (high - low)), 0, 255)
        planes.append(plane)
    return np.stack(planes, axis=-1)


class _Reader:
    """The rows of a raster the sliding window asks for, as RGB, and where
    they are valid (not nodata, not masked)."""

    def __init__(self, source, bands, ranges):
        self.source, self.bands, self.ranges = source, bands, ranges
        self._cached = None  # (top, count, rgb, valid) of the last read

    def rows(self, top, count):
        from rasterio.windows import Window

        window = Window(0, top, self.source.width, count)
        values = self.source.read(self.bands, window=window, masked=True)
        valid = ~np.ma.getmaskarray(values).any(axis=0)
        rgb = _to_rgb(np.ma.getdata(values), self.ranges)
        self._cached = (top, count, valid)
        return rgb

    def valid(self, top, count):
        from rasterio.windows import Window

        if self._cached and self._cached[:2] == (top, count):
            return self._cached[2]
        window = Window(0, top, self.source.width, count)
        values = self.source.read(self.bands, window=window, masked=True)
        return ~np.ma.getmaskarray(values).any(axis=0)

    def run_tile(self, strip, x, width):
        """A tile is predicted unless all of its pixels are nodata."""
        del strip  # the validity of the strip just read is cached
        return bool(self._cached[2][:, x : x + width].any())


def _profile(source, *, dtype, nodata):
    profile = {
        "driver": "GTiff",
        "width": source.width,
        "height": source.height,
        "count": 1,
        "dtype": dtype,
        "nodata": nodata,
        "crs": source.crs,
        "transform": source.transform,
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
        "BIGTIFF": "IF_SAFER",
        **_CREATION,
    }
    return profile


def _write_legend(target, names):
    palette = class_palette(256)
    colours = {
        index: (*(int(v) for v in palette[index % 256]), 255)
        for index in range(len(names))
    }
    target.write_colormap(1, colours)
    target.update_tags(**{NAMES_TAG: json.dumps(list(names))})
    target.set_band_description(1, "class id")


def _cloud_optimized(rasterio, tiled, final):
    """The tiled GeoTIFF rewritten by GDAL's COG driver (internal overviews,
    nearest-neighbour for class ids) into `final`; the COG driver is in
    every rasterio wheel's GDAL (>= 3.1)."""
    with rasterio.Env():
        rasterio.shutil.copy(
            tiled,
            final,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR="2",
            OVERVIEW_RESAMPLING="NEAREST",
            BLOCKSIZE=str(_BLOCK),
        )


def segment_raster(
    model,
    path,
    out_dir,
    tiling,
    *,
    options=RasterOptions(),
    scales=(1.0,),
    flip=False,
    confidence=False,
    overwrite=False,
) -> list:
    """Segments one raster into `<out_dir>/<stem>_classes.tif` (and
    `<stem>_confidence.tif`); returns the paths written.

    Args:
        model: segmentation model (RGB in [0, 255] -> logits).
        path: str or Path. A GeoTIFF or any raster rasterio opens.
        out_dir: str or Path. Output folder (exists).
        tiling: `tiling.Tiling`: tile, overlap and blending.
        options: RasterOptions: bands, value range, CRS policy.
        scales, flip: multi-scale and flipped inference of each tile.
        confidence: bool. Also write the top class probability (uint8).
        overwrite: bool. Replace outputs of an earlier run.

    Raises:
        UserInputError: for a band that does not exist, a raster without a
            CRS (unless allowed), or outputs that exist without
            `overwrite`.
    """
    rasterio = _rasterio()
    path, out_dir = Path(path), Path(out_dir)
    names = class_names(model)
    model = inference_model(model)
    outputs = [out_dir / f"{path.stem}{CLASSES_SUFFIX}"]
    if confidence:
        outputs.append(out_dir / f"{path.stem}{CONFIDENCE_SUFFIX}")
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise UserInputError(
            f"{', '.join(existing)} already exist(s); pass --overwrite to "
            "replace them or choose another --out."
        )
    # GDAL's block cache would otherwise grow to 5% of the machine's memory
    # whatever the raster; blocks not yet written whole stay in it.
    with (
        rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB),
        rasterio.open(path) as source,
    ):
        bands = _check_source(source, path, options)
        reader = _Reader(source, bands, _value_ranges(source, bands, options))
        ignore = 255 if len(names) <= 255 else 65535
        dtype = "uint8" if ignore == 255 else "uint16"
        with _temporary_outputs(outputs) as temporaries:
            targets = [
                rasterio.open(
                    temporaries[0],
                    "w",
                    **_profile(source, dtype=dtype, nodata=ignore),
                )
            ]
            if confidence:
                targets.append(
                    rasterio.open(
                        temporaries[1],
                        "w",
                        **_profile(source, dtype="uint8", nodata=0),
                    )
                )
            try:
                _write_rows(
                    model,
                    reader,
                    (source.height, source.width),
                    tiling,
                    targets,
                    ignore=ignore,
                    scales=scales,
                    flip=flip,
                )
                _write_legend(targets[0], names)
            finally:
                for target in targets:
                    target.close()
            for temporary, final in zip(temporaries, outputs, strict=True):
                with atomic_file(final) as cog:
                    _cloud_optimized(rasterio, temporary, cog)
    return outputs


def _write_rows(model, reader, shape, tiling, targets, *, ignore, scales, flip):
    from rasterio.windows import Window

    for top, probabilities, covered in finished_rows(
        model,
        reader.rows,
        shape,
        tiling,
        scales=scales,
        flip=flip,
        run_tile=reader.run_tile,
    ):
        count = len(probabilities)
        valid = covered & reader.valid(top, count)
        window = Window(0, top, shape[1], count)
        dtype = targets[0].dtypes[0]
        ids = np.where(valid, probabilities.argmax(-1), ignore).astype(dtype)
        targets[0].write(ids, 1, window=window)
        if len(targets) > 1:
            scores = np.where(valid, confidence_map(probabilities), 0)
            targets[1].write(scores, 1, window=window)


class _temporary_outputs:  # noqa: N801 (a context manager, used as one)
    """Temporary siblings of the outputs (the tiled files before their
    cloud-optimized copies), removed whatever happens."""

    def __init__(self, outputs):
        self.paths = [
            p.with_name(f".{p.name}.{os.getpid()}-tiled.partial.tif")
            for p in outputs
        ]

    def __enter__(self):
        return self.paths

    def __exit__(self, *exc):
        for path in self.paths:
            path.unlink(missing_ok=True)
        return False
