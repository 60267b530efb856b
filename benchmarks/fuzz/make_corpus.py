"""Write the fuzzers' seed corpus: tiny images of every reader path and a few bundle manifests (reproducible).

    python benchmarks/fuzz/make_corpus.py            # rewrites corpus/image/ and corpus/manifest/

Seeds are small on purpose (a few hundred bytes each) so mutations reach headers and chunk boundaries quickly.
Manifests point at fuzz_runtime.FAKE_MODEL so the checksum path can succeed as well as fail.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fuzz_runtime import FAKE_MODEL, FAKE_MODEL_NAME  # noqa: E402


def _pil(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def images(rng: np.random.Generator) -> dict[str, bytes]:
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    out = {
        "rgb.png": _pil(rgb, "PNG"),
        "grey.png": _pil(grey, "PNG"),
        "grey_alpha.png": _pil(rgb[..., :2], "PNG", "LA"),
        "rgba.png": _pil(np.dstack([rgb, grey]), "PNG", "RGBA"),
        "grey16.png": _pil((grey.astype(np.uint16) * 257), "PNG"),
        "bilevel.png": _pil(grey > 127, "PNG"),
        "rgb.jpg": _pil(rgb, "JPEG", quality=50),
        "grey.jpg": _pil(grey, "JPEG", quality=50),
        "progressive.jpg": _pil(rgb, "JPEG", quality=50, progressive=True),
        "rgb.bmp": _pil(rgb, "BMP"),
        "rgb.webp": _pil(rgb, "WEBP", quality=50),
        "rgb.gif": _pil(rgb, "GIF"),
        "rgb.tif": _pil(rgb, "TIFF"),
        "rgb_deflate.tif": _pil(rgb, "TIFF", compression="tiff_deflate"),
        "float32.tif": _pil(rng.normal(0, 1, (5, 4)).astype(np.float32), "TIFF"),
        "uint16.tif": _pil(grey.astype(np.uint16) * 100, "TIFF"),
    }
    pal = Image.fromarray(grey, "L").convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    out["palette_transparent.png"] = buf.getvalue()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=50)
    out["cmyk.jpg"] = buf.getvalue()
    out.update(geotiffs(rng))
    return out


def geotiffs(rng: np.random.Generator) -> dict[str, bytes]:
    """GeoTIFFs through rasterio (skipped without it): georeferenced, tiled, nodata, 16-bit, striped float, mask."""
    try:
        from rasterio.crs import CRS
        from rasterio.io import MemoryFile
        from rasterio.transform import from_origin
    except ImportError:
        print("rasterio not installed: no GeoTIFF seeds", file=sys.stderr)
        return {}
    crs, transform = CRS.from_epsg(32640), from_origin(300000.0, 2800000.0, 0.5, 0.5)

    def tif(data: np.ndarray, **kw) -> bytes:
        profile = dict(
            driver="GTiff",
            count=data.shape[0],
            height=data.shape[1],
            width=data.shape[2],
            dtype=data.dtype,
            crs=crs,
            transform=transform,
            **kw,
        )
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(data)
            return bytes(mem.read())

    u8 = rng.integers(0, 256, (3, 20, 18), dtype=np.uint8)
    out = {
        "geo_rgb_tiled.tif": tif(u8, tiled=True, blockxsize=16, blockysize=16),
        "geo_rgb_deflate.tif": tif(u8, compress="deflate", predictor=2),
        "geo_u16_4band_nodata.tif": tif(rng.integers(0, 10000, (4, 9, 11), dtype=np.uint16), nodata=0),
        "geo_f32_striped.tif": tif(rng.normal(0, 1, (1, 8, 6)).astype(np.float32)),
        "geo_i16_2band.tif": tif(rng.integers(-500, 500, (2, 5, 5), dtype=np.int16)),
    }
    with MemoryFile() as mem:  # an internal per-dataset mask instead of a nodata value
        with mem.open(driver="GTiff", count=3, height=12, width=12, dtype="uint8", crs=crs, transform=transform) as ds:
            ds.write(u8[:, :12, :12])
            m = np.full((12, 12), 255, np.uint8)
            m[:4] = 0
            ds.write_mask(m)
        out["geo_rgb_mask.tif"] = bytes(mem.read())
    return out


def manifests() -> dict[str, bytes]:
    tile, n = 32, 3
    model = {
        "path": FAKE_MODEL_NAME,
        "sha256": hashlib.sha256(FAKE_MODEL).hexdigest(),
        "bytes": len(FAKE_MODEL),
        "kind": "onnx",
        "precision": "fp32",
        "nodes": 8,
        "opset": 17,
    }
    base = {
        "format": "co2s-bundle",
        "schema_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "model": {
            "preset": "fake",
            "students": ["a", "b"],
            "fusion": "mean",
            "num_classes": n,
            "tile": tile,
            "untrained": True,
            "folded": [],
            "checkpoint": None,
        },
        "dataset": {"name": "fake", "classes": ["road", "tree", "water"], "palette": [[0, 0, 0], [0, 255, 0]]},
        "input": {"name": "images", "dtype": "uint8", "shape": ["batch", tile, tile, 3], "layout": "NHWC"},
        "outputs": [
            {"name": "labels", "dtype": "uint8", "shape": ["batch", tile, tile]},
            {"name": "confidence", "dtype": "float32", "shape": ["batch", tile, tile]},
        ],
        "batch": {"dynamic": True, "min": 1, "opt": 2, "max": 4},
        "normalization": {
            "in_graph": True,
            "input_range": [0, 255],
            "students": {"a": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}},
        },
        "artifacts": {"onnx_fp32": model},
        "precisions": {"fp32": {}},
        "parity": {"images": 0, "thresholds": {}, "degraded_allowed": False},
        "producer": {"co2s": "0.1.0", "torch": None},
    }
    engine = copy.deepcopy(base)
    engine["artifacts"]["engine_fp16"] = {
        "path": "model.fp16.engine",
        "sha256": "0" * 64,
        "bytes": 10,
        "kind": "engine",
        "precision": "fp16",
        "tensorrt": {
            "version": "10.3.0",
            "profile": {"min": 1, "opt": 2, "max": 4},
            "version_compatible": False,
            "hardware_compatibility": "none",
            "device": {"name": "Orin", "compute_capability": "8.7"},
        },
    }
    probs = copy.deepcopy(base)
    probs["outputs"].append({"name": "probs", "dtype": "float16", "shape": ["batch", n, tile, tile], "layout": "NCHW"})
    probs["parity"]["fp32"] = {"reference": "pytorch", "pixel_agreement": 0.99, "threshold": 0.98, "passed": True}
    wrong = copy.deepcopy(base)
    wrong["model"]["tile"] = "32"
    del wrong["dataset"]["classes"]
    return {
        "valid.json": _dump(base),
        "engine.json": _dump(engine),
        "probs.json": _dump(probs),
        "invalid_fields.json": _dump(wrong),
        "not_object.json": b"[1, 2, 3]\n",
    }


def _dump(d: dict) -> bytes:
    return (json.dumps(d, separators=(",", ":")) + "\n").encode()


def main() -> None:
    rng = np.random.default_rng(7)
    for name, files in (("image", images(rng)), ("manifest", manifests())):
        folder = HERE / "corpus" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for fname, data in sorted(files.items()):
            (folder / fname).write_bytes(data)
        total = sum(len(d) for d in files.values())
        print(f"{folder}: {len(files)} files, {total} bytes")


if __name__ == "__main__":
    main()
