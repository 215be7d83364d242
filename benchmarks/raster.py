"""`python -m benchmarks.raster`: megapixels per second and peak memory of
segmenting one large raster, streamed (`inference.raster`) or in memory
(`tiling.sliding_window_predict` on the whole image), in this process.

    python -m benchmarks.raster --side 20000 --architecture lraspp \
        --backbone mobilenet_v3_large --out r.json
    python -m benchmarks.raster --side 8192 --in-memory
    python -m benchmarks.raster --side 20000 --height 2048 \
        --architecture deeplabv3 --backbone resnet50

--height makes a strip as wide as --side: peak memory depends on the width
(the band of rows in flight), not on the height, so a strip measures the
memory of the square raster and its speed per megapixel.

The raster is written first (smooth synthetic RGB, tiled and compressed,
georeferenced), with random weights of the benchmarked model (speed does
not depend on them); the timing covers reading, inference, writing and the
cloud-optimized copy. Run one measurement per process: peak memory is the
process's own.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import machine_info
from benchmarks.suite import BenchmarkPlan, _build_model
from keras_deeplab.utils.atomic import atomic_write_text
from keras_deeplab.utils.memory import peak_rss_mb

_STRIP = 1024


def _peak_mb():
    return peak_rss_mb()  # VmHWM (ru_maxrss would count a forking parent)


def _write_raster(path, side, height):
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    columns = np.arange(side, dtype=np.float32)[None, :]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side,
        height=height,
        count=3,
        dtype="uint8",
        tiled=True,
        compress="deflate",
        crs="EPSG:32633",
        transform=from_origin(500_000, 4_000_000, 0.3, 0.3),
        BIGTIFF="IF_SAFER",
    ) as target:
        for top in range(0, height, _STRIP):
            count = min(_STRIP, height - top)
            rows = np.arange(top, top + count, dtype=np.float32)[:, None]
            bands = [
                127 + 100 * np.sin(rows / (40 + 9 * c) + columns / (55 - 7 * c))
                for c in range(3)
            ]
            target.write(
                np.stack(bands).astype(np.uint8),
                window=Window(0, top, side, count),
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raster", description=__doc__
    )
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument(
        "--height", type=int, default=None, help="default: --side"
    )
    parser.add_argument("--architecture", default="lraspp")
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--in-memory", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height = args.height or args.side

    from keras_deeplab.inference.raster import segment_raster
    from keras_deeplab.inference.tiling import Tiling, sliding_window_predict

    plan = BenchmarkPlan(
        architecture=args.architecture,
        backbones=(args.backbone,),
        output_strides=(args.output_stride,),
        variant="torchvision",
    )
    model = _build_model(plan, args.backbone, args.output_stride)
    tiling = Tiling((args.tile, args.tile))
    model.predict_on_batch(np.zeros((1, args.tile, args.tile, 3), np.float32))
    with tempfile.TemporaryDirectory(prefix="raster_bench_") as work:
        work = Path(work)
        _write_raster(work / "ortho.tif", args.side, height)
        baseline = _peak_mb()
        start = time.perf_counter()
        if args.in_memory:
            import rasterio

            with rasterio.open(work / "ortho.tif") as source:
                image = source.read().transpose(1, 2, 0)
            sliding_window_predict(model, image, tiling)
        else:
            segment_raster(model, work / "ortho.tif", work, tiling)
        seconds = time.perf_counter() - start
    megapixels = args.side * height / 1e6
    result = {
        "machine": machine_info(),
        "arguments": vars(args),
        "megapixels": megapixels,
        "seconds": seconds,
        "megapixels_per_s": megapixels / seconds,
        "peak_rss_mb": _peak_mb(),
        "peak_rss_before_mb": baseline,
    }
    mode = "in memory" if args.in_memory else "streamed"
    print(
        f"{args.architecture} {args.backbone}, {args.side}x{height} "
        f"{mode}: {seconds:.0f} s, {result['megapixels_per_s']:.2f} Mpx/s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB (before the run "
        f"{baseline:.0f} MB); CPU flags "
        f"{' '.join(result['machine']['cpu_flags'])}"
    )
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
