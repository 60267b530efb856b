"""Polygonisation time and peak memory: `--vector` on a SIZE x SIZE label raster (default 20 000²).

The labels are a GeoTIFF written here (blocks of random classes, BLOCK pixels on a side, plus one-pixel specks),
read back strip by strip as the runtime's GeoTIFF sink does; the polygons are written to a GeoPackage. Peak
memory is the process's maximum resident set (ru_maxrss) minus what it held before polygonising.

    python benchmarks/polygonize_bench.py [--size 20000] [--block 64] [--strip 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class LabelsFile:
    """What write_polygons needs of a sink, over a labels GeoTIFF on disk."""

    def __init__(self, path: Path, tmpdir: Path):
        import rasterio

        self.path, self.tmpdir = path, tmpdir
        with rasterio.open(path) as ds:
            self.height, self.width, self.crs, self.transform = ds.height, ds.width, ds.crs, ds.transform

    def finished_rows(self, y0, y1):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(self.path) as ds:
            return ds.read(1, window=Window(0, y0, self.width, y1 - y0)), None

    def georeference(self):
        return self.crs, self.transform

    def _temp(self, final):
        return self.tmpdir / ("tmp-" + final.name)


def make_labels(path: Path, size: int, block: int, seed: int = 0) -> None:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 5, (size // block + 1, size // block + 1), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype="uint8",
        crs=CRS.from_epsg(32640),
        transform=from_origin(300000.0, 2800000.0, 0.5, 0.5),
        tiled=True,
        compress="deflate",
        nodata=255,
    ) as ds:
        for y0 in range(0, size, 1024):
            h = min(1024, size - y0)
            rows = np.arange(y0, y0 + h) // block
            strip = cells[rows][:, np.arange(size) // block]
            specks = rng.random((h, size)) < 1e-4
            strip[specks] = rng.integers(0, 5, int(specks.sum()), dtype=np.uint8)
            ds.write(strip, 1, window=Window(0, y0, size, h))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--strip", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "polygonize"))
    args = ap.parse_args(argv)
    from co2s.runtime.io.vector import write_polygons

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        make_labels(d / "labels.tif", args.size, args.block)
        t_make = time.perf_counter() - t
        sink = LabelsFile(d / "labels.tif", d)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        [(tmp, _)] = write_polygons(
            sink,
            d / "labels.polygons.gpkg",
            driver="GPKG",
            classes=[f"c{i}" for i in range(5)],
            pixel_m2=0.25,
            strip_rows=args.strip,
        )
        seconds = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        import pyogrio

        features = pyogrio.read_info(tmp)["features"]
        size_mb = tmp.stat().st_size / 2**20
    row = {
        "size": args.size,
        "block": args.block,
        "strip_rows": args.strip,
        "features": int(features),
        "seconds": round(seconds, 2),
        "mpix_per_s": round(args.size**2 / 1e6 / seconds, 2),
        "peak_rss_mb": round(rss1 / 1024, 1),
        "peak_rss_added_mb": round((rss1 - rss0) / 1024, 1),
        "gpkg_mb": round(size_mb, 1),
        "make_seconds": round(t_make, 1),
    }
    print(json.dumps(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(row, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "| size | block | strip rows | features | seconds | MP/s | peak RSS MB (added) | GPKG MB |\n|---|---|---|---|---|---|---|---|\n"
        f"| {args.size}² | {args.block} | {args.strip} | {row['features']} | {row['seconds']} | {row['mpix_per_s']} | "
        f"{row['peak_rss_mb']} ({row['peak_rss_added_mb']}) | {row['gpkg_mb']} |\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
