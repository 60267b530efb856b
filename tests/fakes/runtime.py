"""Test doubles for the runtime: tiny ONNX bundles (valid manifests, real onnxruntime sessions) and in-process
fake backends whose output at a pixel depends only on that pixel (so stitching errors show up exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from co2s.bundle import BatchSpec
from co2s.runtime.backends.base import Backend, BackendInfo

OPSET = 17


def pixel_classifier(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 4, (3, num_classes)).astype(np.float32), rng.normal(0, 1, num_classes).astype(np.float32)


def reference_outputs(images: np.ndarray, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """What the fake ONNX model computes, in numpy: softmax((x/255) @ W + b) over classes."""
    w, b = pixel_classifier(num_classes, seed)
    logits = (images.astype(np.float32) / 255.0) @ w + b
    e = np.exp(logits - logits.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return {"labels": p.argmax(-1).astype(np.uint8), "confidence": p.max(-1), "probs": np.moveaxis(p, -1, 1)}


def make_onnx(
    path: Path, *, tile: int, num_classes: int, batch: int | str = "batch", probs: bool = False, seed: int = 0
) -> Path:
    """uint8 NHWC images -> per-pixel linear classifier -> labels/confidence(/probs float16 NCHW)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = pixel_classifier(num_classes, seed)
    nodes = [
        helper.make_node("Cast", ["images"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "inv255"], ["xs"]),
        helper.make_node("MatMul", ["xs", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("ArgMax", ["p"], ["idx"], axis=-1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.UINT8),
        helper.make_node("ReduceMax", ["p"], ["confidence"], axes=[-1], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("labels", TensorProto.UINT8, [batch, tile, tile]),
        helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [batch, tile, tile]),
    ]
    if probs:
        nodes += [
            helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["pt"], ["probs"], to=TensorProto.FLOAT16),
        ]
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT16, [batch, num_classes, tile, tile]))
    graph = helper.make_graph(
        nodes,
        "fake_co2s",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [batch, tile, tile, 3])],
        outputs,
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle(
    root: Path,
    *,
    tile: int = 32,
    num_classes: int = 4,
    batch: tuple[int, int, int] = (1, 2, 4),
    probs: bool = False,
    precisions: tuple[str, ...] = ("fp32",),
    seed: int = 0,
) -> Path:
    """A folder with fake ONNX models and a manifest that `co2s.bundle.load_bundle` accepts."""
    from co2s.bundle import artefact_record, write_manifest
    from co2s.bundle.formats import get_format

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lo, opt, hi = batch
    dim = "batch" if lo != hi else lo
    artifacts = {}
    for p in precisions:
        fmt = get_format("onnx", p)
        make_onnx(root / fmt.filename, tile=tile, num_classes=num_classes, batch=dim, probs=probs, seed=seed)
        artifacts[fmt.key] = artefact_record(root, fmt)
    outputs = [
        {"name": "labels", "dtype": "uint8", "shape": [dim, tile, tile]},
        {"name": "confidence", "dtype": "float32", "shape": [dim, tile, tile]},
    ]
    if probs:
        outputs.append({"name": "probs", "dtype": "float16", "shape": [dim, num_classes, tile, tile], "layout": "NCHW"})
    rng = np.random.default_rng(1)
    data = {
        "format": "co2s-bundle",
        "schema_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "model": {
            "preset": "fake",
            "students": ["fake"],
            "fusion": "mean",
            "num_classes": num_classes,
            "tile": tile,
            "untrained": True,
            "folded": [],
        },
        "dataset": {
            "name": "fake",
            "classes": [f"c{i}" for i in range(num_classes)],
            "palette": rng.integers(0, 256, (num_classes, 3)).tolist(),
        },
        "input": {"name": "images", "dtype": "uint8", "shape": [dim, tile, tile, 3], "layout": "NHWC"},
        "outputs": outputs,
        "batch": {"dynamic": lo != hi, "min": lo, "opt": opt, "max": hi},
        "normalization": {"in_graph": True, "input_range": [0, 255], "students": {}},
        "artifacts": artifacts,
        "precisions": {p: {} for p in precisions},
        "parity": {"images": 0, "thresholds": {}, "degraded_allowed": False},
        "producer": {"co2s": "test"},
    }
    write_manifest(root, data)
    return root


def pixel_rule(images: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Exact integer per-pixel rule (no float reductions whose rounding could depend on array shape)."""
    x = images.astype(np.int64)
    key = x[..., 0] * 3 + x[..., 1] * 5 + x[..., 2] * 7
    labels = (key % num_classes).astype(np.uint8)
    conf = ((key % 97) / 96.0).astype(np.float32)
    probs = np.full(images.shape[:3] + (num_classes,), 0.1 / max(1, num_classes - 1), np.float32)
    np.put_along_axis(probs, labels[..., None].astype(np.int64), 0.9, axis=-1)
    return {"labels": labels, "confidence": conf, "probs": np.moveaxis(probs, -1, 1)}


class FakeBackend(Backend):
    """In-process backend: `rule(tiles) -> outputs`; default is `pixel_rule`. Records batch sizes seen."""

    name = "fake"
    precision = "fp32"

    def __init__(
        self, tile: int, num_classes: int = 4, batch: BatchSpec = BatchSpec(1, 2, 4), rule=None, probs: bool = True
    ):
        self.tile, self.batch, self.num_classes = tile, batch, num_classes
        self.rule = rule or (lambda t: pixel_rule(t, num_classes))
        self.outputs = ("labels", "confidence") + (("probs",) if probs else ())
        self.batch_sizes: list[int] = []

    def run(self, tiles, profiler=None, *, outputs=None):
        """Returns every output it has, whatever `outputs` asks for: callers filter what they use."""
        self.check_tiles(tiles)
        self.batch_sizes.append(tiles.shape[0])
        out = self.rule(tiles)
        return {k: out[k] for k in self.outputs}

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, self.precision)


def centrality_rule(tiles: np.ndarray, tile: int) -> dict[str, np.ndarray]:
    """Confidence = how central a pixel is in its tile (1 at the centre, 0 at the border): stitched confidence
    must then be the best centrality any covering tile offers."""
    b = tiles.shape[0]
    c = centrality(tile)
    return {"labels": np.zeros((b, tile, tile), np.uint8), "confidence": np.broadcast_to(c, (b, tile, tile)).copy()}


def centrality(tile: int) -> np.ndarray:
    d = np.abs(np.arange(tile) + 0.5 - tile / 2) / (tile / 2)
    return (1 - np.maximum(d[:, None], d[None, :])).astype(np.float32)


# --- bad image files ----------------------------------------------------------------------------------------------
def rgb(h=40, w=50, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h (the pixel data is a few bytes: a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def truncated_png(path: Path) -> Path:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def damaged_bundle(root: Path, damage: str) -> Path:
    """A bundle whose fp32 model is missing (damage="missing") or has one flipped byte (damage="checksum")."""
    from co2s.bundle import load_bundle

    root = make_bundle(root, tile=32)
    model = load_bundle(root).artefact("onnx", "fp32").path
    if damage == "missing":
        model.unlink()
    else:
        data = bytearray(model.read_bytes())
        data[100] ^= 0x55
        model.write_bytes(bytes(data))
    return root


def bundle_with_engine(root: Path, *, version="10.3.0", cc="8.7", device="Orin") -> Path:
    """An fp32/fp16 bundle whose manifest records an fp16 TensorRT engine built with `version` on `device`
    (compute capability `cc`); the plan bytes are junk, for the compatibility checks that run before loading."""
    from co2s.bundle import artefact_record, read_manifest, write_manifest
    from co2s.bundle.formats import get_format

    make_bundle(root, tile=32, precisions=("fp32", "fp16"))
    engine = get_format("engine", "fp16")
    (root / engine.filename).write_bytes(b"\x00plan-bytes-only-a-GPU-can-read" * 10)
    data = read_manifest(root)
    data["artifacts"][engine.key] = artefact_record(
        root,
        engine,
        tensorrt={"version": version, "strongly_typed": True, "device": {"name": device, "compute_capability": cc}},
    )
    write_manifest(root, data)
    return root


def write_projected_rgba(path, img: np.ndarray, alpha: np.ndarray, res: float = 2.0):
    """A 4-band RGBA GeoTIFF in UTM 40N (EPSG:32640) with `res` m pixels: alpha is its nodata mask."""
    import pytest

    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF support needs rasterio")
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    h, w = alpha.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=4,
        dtype="uint8",
        crs=CRS.from_epsg(32640),
        transform=from_origin(300000.0, 2800000.0, res, res),
        photometric="RGB",
        alpha="YES",
    ) as ds:
        ds.write(np.concatenate([np.moveaxis(img, 2, 0), alpha[None]]))
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path
