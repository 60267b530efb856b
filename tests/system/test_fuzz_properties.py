"""Property-based fuzzing of what the runtime reads from users, plus one named regression test per crash that
benchmarks/fuzz/fuzz_runtime.py (atheris) found.

- image readers (`co2s.runtime.io.open_source`: Pillow and rasterio/GDAL): valid random images round-trip; arbitrary and
  mutated PNG/JPEG/TIFF/GeoTIFF bytes give a well-formed uint8 RGB window or a Co2SInputError, nothing else;
- tiler (`tiling.TileGrid`, `Stitcher`): tiles stay in bounds and cover every pixel, keep boxes partition the
  scene, and stitching constant outputs gives the constant back, for tiny and very elongated scenes too;
- manifest (`co2s.bundle.load_bundle`, with and without checksum verification): arbitrary JSON and mutated valid manifests either
  load or raise a ManifestError naming the file and the field.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO_ROOT
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from co2s.bundle import MANIFEST_NAME, ManifestError, load_bundle
from co2s.errors import Co2SInputError
from co2s.runtime.io import InputOptions, Stretch, open_source
from co2s.runtime.tiling import NODATA_LABEL, Stitcher, TileGrid, pad_to_tile, parse_overlap

REGRESSIONS = DATA / "fuzz_regressions"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

try:
    import rasterio
    from rasterio.io import MemoryFile
except ImportError:  # GeoTIFF cases need the [geo] extra
    rasterio = None

needs_rasterio = pytest.mark.skipif(rasterio is None, reason="GeoTIFF reading needs rasterio (pip install 'co2s[geo]')")
# Pillow decodes these whole; GeoTIFF goes through GDAL when rasterio is installed (as .tif).
SUFFIXES = (".png", ".tif")
OPTION_SETS = (
    InputOptions(max_pixels=4_000_000),
    InputOptions(bands=(1,), stretch=Stretch("percentile", 2.0, 98.0), nodata=0.0, max_pixels=4_000_000),
)


# Pillow warns about odd TIFF tags and GDAL logs every bad header; neither is a failure here.
pytestmark = pytest.mark.filterwarnings("ignore")
logging.getLogger("rasterio").setLevel(logging.CRITICAL)


# ------------------------------------------------------------------------------------------------- images
def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def geotiff_bytes(data: np.ndarray, **kw) -> bytes:
    """[bands, H, W] -> GeoTIFF bytes (georeferenced, so the rasterio path is the one a real scene takes)."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    profile = dict(
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=CRS.from_epsg(32640),
        transform=from_origin(300000.0, 2800000.0, 0.5, 0.5),
        **kw,
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
        return bytes(mem.read())


def read_as_user_file(data: bytes, suffix: str, options: InputOptions) -> np.ndarray | None:
    """Open bytes the way `co2s-infer` opens a file and read it whole; None when refused with Co2SInputError.
    Any other exception propagates and fails the test."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            src = open_source(path, options)
        except Co2SInputError as e:
            assert str(path) in str(e), f"the message must name the file: {e}"
            return None
        try:
            h, w = src.height, src.width
            assert h > 0 and w > 0
            if h * w > 1_000_000:  # a header can declare a huge sparse raster: the corners are enough
                h, w = min(h, 64), min(w, 64)
            rgb, valid = src.read(0, 0, h, w)
            assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8, (rgb.shape, rgb.dtype)
            assert valid is None or (valid.shape == (h, w) and valid.dtype == bool)
            prev = src.preview(16)
            assert prev.ndim == 3 and prev.shape[2] == 3 and prev.dtype == np.uint8
            return rgb
        except Co2SInputError as e:
            assert str(path) in str(e), f"the message must name the file: {e}"
            return None
        finally:
            src.close()


def assert_reads_or_input_error(data: bytes) -> None:
    for suffix in SUFFIXES:
        for options in OPTION_SETS:
            read_as_user_file(data, suffix, options)


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    seeds = {
        "png": encode(rgb, "PNG"),
        "png16": encode(rgb[..., 0].astype(np.uint16) * 257, "PNG"),
        "jpeg": encode(rgb, "JPEG", quality=60),
        "tiff": encode(rgb, "TIFF"),
        "tiff_deflate": encode(rgb, "TIFF", compression="tiff_deflate"),
    }
    if rasterio is not None:
        seeds["geotiff_tiled"] = geotiff_bytes(
            np.moveaxis(rgb, 2, 0).copy(), tiled=True, blockxsize=16, blockysize=16, compress="deflate"
        )
        seeds["geotiff_u16_nodata"] = geotiff_bytes(rng.integers(0, 5000, (4, 7, 5), dtype=np.uint16), nodata=0)
    return seeds


SEEDS = _seed_images()

# One edit of a valid file: overwrite a byte, insert bytes, delete a run, or truncate.
edit = st.tuples(
    st.sampled_from(["set", "insert", "delete", "truncate"]),
    st.floats(0, 1, exclude_max=True),
    st.binary(min_size=1, max_size=4),
)


def apply_edits(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for op, where, payload in edits:
        if not buf:
            break
        i = int(where * len(buf))
        if op == "set":
            buf[i : i + len(payload)] = payload[: len(buf) - i]
        elif op == "insert":
            buf[i:i] = payload
        elif op == "delete":
            del buf[i : i + payload[0] % 16 + 1]
        else:
            del buf[i:]
    return bytes(buf)


@FAST
@given(name=st.sampled_from(sorted(SEEDS)), edits=st.lists(edit, min_size=1, max_size=4))
def test_mutated_images_read_or_raise_input_error(name, edits):
    assert_reads_or_input_error(apply_edits(SEEDS[name], edits))


@FAST
@given(
    head=st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"II*\x00",
            b"MM\x00*",
            b"BM",
            b"GIF89a",
            b"RIFF\x00\x00\x00\x00WEBP",
            b"II+\x00",
        ]
    ),
    tail=st.binary(max_size=300),
)
def test_arbitrary_bytes_behind_a_signature_read_or_raise_input_error(head, tail):
    assert_reads_or_input_error(head + tail)


@FAST
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    fmt=st.sampled_from(["PNG", "BMP", "TIFF", "WEBP"]),
    seed=st.integers(0, 2**16),
)
def test_valid_lossless_images_round_trip(h, w, fmt, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    for suffix in (".png", ".tif") if fmt == "TIFF" else (".png",):
        got = read_as_user_file(encode(rgb, fmt, **kw), suffix, InputOptions())
        assert got is not None and np.array_equal(got, rgb), (fmt, suffix)


@FAST
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_valid_jpeg_keeps_its_shape(h, w, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    got = read_as_user_file(encode(rgb, "JPEG", quality=90), ".jpg", InputOptions())
    assert got is not None and got.shape == rgb.shape


@needs_rasterio
@FAST
@given(h=st.integers(1, 70), w=st.integers(1, 70), tiled=st.booleans(), seed=st.integers(0, 2**16))
def test_valid_geotiff_round_trips_window_by_window(h, w, tiled, seed):
    data = np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)
    kw = dict(tiled=True, blockxsize=16, blockysize=16) if tiled else {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "scene.tif"
        path.write_bytes(geotiff_bytes(data, **kw))
        src = open_source(path, InputOptions())
        try:
            assert (src.height, src.width, src.windowed) == (h, w, True)
            y0, x0 = h // 3, w // 2
            rgb, valid = src.read(y0, x0, h - y0, w - x0)
            assert valid is None and np.array_equal(rgb, np.moveaxis(data, 0, 2)[y0:, x0:])
        finally:
            src.close()


@needs_rasterio
@FAST
@given(h=st.integers(1, 30), w=st.integers(1, 30), hi=st.integers(1, 60000), seed=st.integers(0, 2**16))
def test_sixteen_bit_geotiff_with_fixed_stretch_matches_the_formula(h, w, hi, seed):
    data = np.random.default_rng(seed).integers(0, hi + 1, (3, h, w), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "scene.tif"
        path.write_bytes(geotiff_bytes(data))
        src = open_source(path, InputOptions(stretch=Stretch("range", 0.0, float(hi))))
        try:
            rgb, _ = src.read(0, 0, h, w)
        finally:
            src.close()
    want = np.clip(np.moveaxis(data, 0, 2).astype(np.float32) * np.float32(255.0 / hi) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(rgb, want)


# ----------------------------------------------------------------------------------------- image regressions
def tiff_bytes(entries: list[tuple[int, int, int]], data: bytes = b"\x00" * 16) -> bytes:
    """Little-endian TIFF with one IFD of (tag, type, value) entries (count 1) and `data` behind it."""
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(struct.pack("<HHII", tag, typ, 1, value) for tag, typ, value in sorted(entries))
        + b"\x00\x00\x00\x00"
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + data


def test_regression_tiff_tile_offsets_without_tile_size_is_input_error(tmp_path):
    """fuzz image crash: TileOffsets but no TileWidth/TileLength made Pillow's Image.open raise ValueError
    ("Invalid tile dimensions"), which escaped the reader as an unexpected error."""
    data_at = 8 + 2 + 8 * 12 + 4
    raw = tiff_bytes(
        [(256, 4, 4), (257, 4, 4), (258, 3, 8), (259, 3, 1), (262, 3, 1), (277, 3, 1), (324, 4, data_at), (325, 4, 16)]
    )
    with pytest.raises(ValueError, match="Invalid tile dimensions"):  # the root cause, straight from Pillow
        Image.open(io.BytesIO(raw))
    path = tmp_path / "tiles.png"  # .png: read by Pillow whatever the content
    path.write_bytes(raw)
    with pytest.raises(Co2SInputError, match=r"tiles\.png: corrupt image header \(Invalid tile dimensions\)"):
        open_source(path, InputOptions())
    assert_reads_or_input_error(raw)


@needs_rasterio
def test_regression_geotiff_corrupt_block_while_sampling_stretch_is_input_error(tmp_path):
    """fuzz image crash: a damaged deflate block failed in the whole-scene sampling read that --stretch does when the
    file is opened (GeoTiffSource._decimated), outside the try that turns read failures into a clear message."""
    good = geotiff_bytes(np.arange(256, dtype=np.uint16).reshape(1, 16, 16), compress="deflate")
    with MemoryFile(good) as mem, mem.open() as ds:  # where GDAL wrote the one compressed block
        off = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    bad = bytearray(good)
    bad[off + 2 : off + size] = b"\xff" * (size - 2)  # keep the zlib header, break the stream
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes(bad))
    with pytest.raises(Co2SInputError, match=r"damaged\.tif: read failed while sampling the whole scene"):
        open_source(path, InputOptions(bands=(1,), stretch=Stretch("percentile", 2, 98)))
    assert_reads_or_input_error(bytes(bad))


@needs_rasterio
def test_regression_tiff_giant_strip_is_refused_before_reading(tmp_path):
    """fuzz image out-of-memory: a 206-byte TIFF declaring 2 114 034 808 x 6 uint16 pixels in one-row strips made GDAL
    allocate a 4 GB strip on the first read. Blocks above MAX_BLOCK_BYTES are now refused when the file is opened."""
    raw = (REGRESSIONS / "tiff_giant_strip.tif").read_bytes()
    path = tmp_path / "giant.tif"
    path.write_bytes(raw)
    with pytest.raises(Co2SInputError, match=r"giant\.tif: one internal block is 2114034808x1 pixels.*TILED=YES"):
        open_source(path, InputOptions(bands=(1,), stretch=Stretch("percentile", 2, 98)))


@needs_rasterio
def test_regression_complex_geotiff_is_input_error(tmp_path):
    """Found while reading the fuzz output: complex_int16 rasters made np.result_type raise TypeError; complex data is
    not imagery the model can take, so it is refused by name."""
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=1, dtype="complex_int16") as ds:
        ds.write(np.zeros((1, 3, 4), np.complex64))
    with pytest.raises(Co2SInputError, match=r"slc\.tif: complex-valued raster \(complex_int16\)"):
        open_source(path, InputOptions(bands=(1,)))


# -------------------------------------------------------------------------------------------------- tiling
@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), tile=st.integers(16, 128), frac=st.floats(0, 1, exclude_max=True))
@example(h=1, w=1, tile=16, frac=0.0).via("tiny")
@example(h=1, w=20000, tile=64, frac=0.5).via("one row, very wide")
@example(h=9000, w=2, tile=32, frac=0.99).via("very tall")
@example(h=17, w=17, tile=16, frac=0.99).via("stride 1")
def test_tiles_cover_every_pixel_and_stay_in_bounds(h, w, tile, frac):
    overlap = int(frac * tile)
    g = TileGrid(h, w, tile, overlap)
    cover = np.zeros((h, w), np.int32)
    keep = np.zeros((h, w), np.int32)
    for i, t in enumerate(g):
        assert t.index == i and t.h == min(tile, h - t.y0) and t.w == min(tile, w - t.x0)
        assert 0 <= t.y0 < h and 0 <= t.x0 < w and t.y0 + t.h <= h and t.x0 + t.w <= w
        assert t.y0 <= t.keep_y[0] < t.keep_y[1] <= t.y0 + t.h and t.x0 <= t.keep_x[0] < t.keep_x[1] <= t.x0 + t.w
        cover[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] += 1
        keep[t.keep_y[0] : t.keep_y[1], t.keep_x[0] : t.keep_x[1]] += 1
    assert cover.min() >= 1, "a pixel no tile covers"
    assert (keep == 1).all(), "keep boxes must partition the scene"
    for starts in (g.ys, g.xs):  # evenly spaced within the stride, the last flush with the end
        steps = np.diff(starts)
        assert starts[0] == 0 and (steps > 0).all() and (steps <= g.stride).all()
    assert g.ys[-1] == max(0, h - tile) and g.xs[-1] == max(0, w - tile)
    assert len(g) == g.rows * g.cols


def run_stitcher(g: TileGrid, *, blend: bool, probs_vec: np.ndarray, conf: float, nodata_every: int = 0):
    """Feed constant tile outputs (every `nodata_every`-th tile all nodata) and collect the emitted strips."""
    strips = []
    c = len(probs_vec)
    st_ = Stitcher(
        g, lambda y0, y1, lab, cf: strips.append((y0, y1, lab.copy(), cf.copy())), blend=blend, num_classes=c
    )
    label = int(np.argmax(probs_vec))
    t = g.tile
    for win in g:
        if nodata_every and win.index % nodata_every == 0:
            st_.add(win, None, None, None, np.zeros((t, t), bool))
            continue
        st_.add(
            win,
            np.full((t, t), label, np.uint8),
            np.full((t, t), conf, np.float32),
            np.broadcast_to(probs_vec[:, None, None], (c, t, t)).astype(np.float16),
        )
    assert st_.done
    return strips


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 150),
    w=st.integers(1, 150),
    tile=st.integers(16, 64),
    blend=st.booleans(),
    raw=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6),
    conf=st.floats(0.0, 1.0),
    frac=st.floats(0, 1, exclude_max=True),
)
@example(h=1, w=3000, tile=16, blend=True, raw=[0.2, 0.8], conf=0.5, frac=0.3).via("huge aspect")
@example(h=2000, w=1, tile=16, blend=False, raw=[0.8, 0.2], conf=1.0, frac=0.9).via("huge aspect, tall")
def test_stitching_constant_outputs_gives_the_constant(h, w, tile, blend, raw, conf, frac):
    overlap = int(frac * tile)
    probs = np.asarray(raw, np.float32) / np.sum(raw)
    assume(np.sort(probs)[-1] - np.sort(probs)[-2] > 1e-2)  # a unique arg-max after float16 rounding
    g = TileGrid(h, w, tile, overlap)
    strips = run_stitcher(g, blend=blend, probs_vec=probs, conf=conf)
    assert [s[0] for s in strips] == [0] + [s[1] for s in strips[:-1]] and strips[-1][1] == h  # in order, no gaps
    labels = np.concatenate([s[2] for s in strips])
    confidence = np.concatenate([s[3] for s in strips])
    assert labels.shape == (h, w) and (labels == np.argmax(probs)).all()
    assert np.allclose(confidence, np.float32(conf), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 120), w=st.integers(1, 120), tile=st.integers(16, 48), blend=st.booleans(), every=st.integers(1, 3)
)
def test_all_nodata_tiles_become_nodata_and_the_rest_stay_constant(h, w, tile, blend, every):
    g = TileGrid(h, w, tile, tile // 4)
    strips = run_stitcher(g, blend=blend, probs_vec=np.array([0.1, 0.9], np.float32), conf=0.75, nodata_every=every)
    labels = np.concatenate([s[2] for s in strips])
    assert set(np.unique(labels)) <= {1, NODATA_LABEL}
    keep = np.zeros((h, w), bool)  # pixels kept by a skipped tile must be nodata
    for win in g:
        if win.index % every == 0:
            keep[win.keep_y[0] : win.keep_y[1], win.keep_x[0] : win.keep_x[1]] = True
    assert (labels[keep] == NODATA_LABEL).all() and (labels[~keep] == 1).all()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), c=st.integers(1, 4), extra=st.integers(0, 40))
def test_pad_to_tile_keeps_the_window_and_fills_the_tile(h, w, c, extra):
    tile = max(h, w) + extra
    x = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, c), dtype=np.uint8)
    p = pad_to_tile(x, tile)
    assert p.shape == (tile, tile, c) and np.array_equal(p[:h, :w], x)


@settings(max_examples=100, deadline=None)
@given(
    value=st.one_of(
        st.none(), st.text(max_size=12), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6)
    ),
    tile=st.integers(16, 512),
)
def test_parse_overlap_returns_a_usable_overlap_or_input_error(value, tile):
    try:
        px = parse_overlap(value, tile)
    except Co2SInputError as e:
        assert "--tile-overlap" in str(e)
        return
    assert isinstance(px, int) and 0 <= px <= tile // 2  # tiles advance by at least half a tile
    TileGrid(tile * 2 + 1, tile + 3, tile, px)  # and the grid accepts it


def test_grid_rejects_unusable_sizes_with_input_error():
    for args in ((0, 5, 16, 0), (5, -1, 16, 0), (5, 5, 16, 16), (5, 5, 16, -1)):
        with pytest.raises(Co2SInputError):
            TileGrid(*args)


# ------------------------------------------------------------------------------------------------ manifest
def valid_manifest() -> tuple[dict, bytes]:
    """The fuzz corpus's engine manifest (every field the runtime reads) and the model bytes it points at."""
    data = json.loads((REPO_ROOT / "benchmarks/fuzz/corpus/manifest/engine.json").read_text())
    return data, b"co2s fuzz stand-in for an ONNX model\n"


def write_bundle(folder: Path, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.fp32.onnx").write_bytes(valid_manifest()[1])
    (folder / MANIFEST_NAME).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return folder


def test_valid_manifest_seed_loads(tmp_path):
    data, _ = valid_manifest()
    root = write_bundle(tmp_path / "b", json.dumps(data))
    b = load_bundle(root)
    assert b.tile == 32 and b.num_classes == 3 and b.batch.max == 4
    eng = b.find("engine", "fp16")[0]
    assert eng.compute_capability == (8, 7) and eng.batch.max == 4
    with pytest.raises(ManifestError, match="fp16 engine file model.fp16.engine is missing"):  # the seed has none
        load_bundle(root, verify=True)
    del data["artifacts"]["engine_fp16"]
    load_bundle(write_bundle(tmp_path / "c", json.dumps(data)), verify=True)  # the model's sha256 fits


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(value=json_values)
def test_arbitrary_json_is_refused_with_a_message_naming_the_manifest(value):
    with tempfile.TemporaryDirectory() as d:
        root = write_bundle(Path(d) / "b", json.dumps(value))
        with pytest.raises(ManifestError, match=MANIFEST_NAME):
            load_bundle(root)


@FAST
@given(text=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_are_refused_as_not_json_or_not_a_manifest(text):
    with tempfile.TemporaryDirectory() as d:
        root = write_bundle(Path(d) / "b", text)
        with pytest.raises(ManifestError, match=MANIFEST_NAME):
            load_bundle(root, verify=True)


def _paths(node, prefix=()):
    """Every (path) into a JSON document, root excluded."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


_BASE, _ = valid_manifest()
_ALL_PATHS = sorted(_paths(_BASE), key=repr)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(_ALL_PATHS), delete=st.booleans(), value=json_values)
@example(path=("artifacts", "engine_fp16", "tensorrt", "device", "compute_capability"), delete=False, value="sm_")
@example(path=("artifacts", "engine_fp16", "tensorrt", "profile"), delete=False, value={"min": 1})
@example(path=("model", "num_classes"), delete=False, value=2)
@example(path=("batch", "min"), delete=False, value=9)
def test_mutated_manifest_loads_or_names_the_field(path, delete, value):
    data = copy.deepcopy(_BASE)
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        if isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with tempfile.TemporaryDirectory() as d:
        root = write_bundle(Path(d) / "b", json.dumps(data))
        try:
            b = load_bundle(root)
        except ManifestError as e:
            msg = str(e)
            assert str(root / MANIFEST_NAME) in msg
            leaf = [k for k in path if isinstance(k, str)][-1]  # the field, or the list holding the item
            assert leaf in msg, (path, msg)
            return
        # it loaded: the typed view is usable
        assert b.tile >= 16 and 1 <= b.num_classes <= 254 and b.palette.shape[0] >= b.num_classes
        assert b.batch.min <= b.batch.opt <= b.batch.max
        for a in b.artefacts:
            assert a.compute_capability is None or len(a.compute_capability) == 2


# -------------------------------------------------------------------------------------- manifest regressions
def test_regression_manifest_tensorrt_profile_missing_max(tmp_path):
    """fuzz manifest crash: an engine record whose tensorrt.profile lacked "max" passed the schema (tensorrt is
    a free-form object there) and failed in the typed bundle view with KeyError: 'max'."""
    data, _ = valid_manifest()
    del data["artifacts"]["engine_fp16"]["tensorrt"]["profile"]["max"]
    root = write_bundle(tmp_path / "b", json.dumps(data))
    with pytest.raises(ManifestError, match=r"artifacts\.engine_fp16\.tensorrt\.profile: missing required field 'max'"):
        load_bundle(root)


@pytest.mark.parametrize("cc", ["sm_", "sm8", "8.7.1", "87\n", "eight", [8], [8, "7"], 87])
def test_regression_manifest_bad_compute_capability(tmp_path, cc):
    """Same family: compute capabilities bundle._cc cannot parse raised ValueError/TypeError at load time."""
    data, _ = valid_manifest()
    data["artifacts"]["engine_fp16"]["tensorrt"]["device"]["compute_capability"] = cc
    root = write_bundle(tmp_path / "b", json.dumps(data))
    with pytest.raises(ManifestError, match=r"tensorrt\.device\.compute_capability"):
        load_bundle(root)


def test_regression_manifest_class_count_mismatch(tmp_path):
    """fuzz manifest finding: dataset.classes with 1 name against model.num_classes 3 loaded, and a bundle with probs
    would then fail in the blend stitcher (class buffers sized from the names); now refused by name."""
    root = write_bundle(tmp_path / "b", (REGRESSIONS / "manifest_class_count_mismatch.json").read_bytes())
    with pytest.raises(ManifestError, match=r"dataset\.classes: 1 names, but model\.num_classes is 3"):
        load_bundle(root)


def test_regression_manifest_deeply_nested_json(tmp_path):
    """json.loads raises RecursionError (not JSONDecodeError) on deep nesting; it escaped as an unexpected error."""
    root = write_bundle(tmp_path / "b", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ManifestError, match="not valid JSON.*nested too deeply"):
        load_bundle(root)


def test_regression_manifest_integer_past_python_digit_limit(tmp_path):
    """A 5000-digit integer makes json.loads raise a plain ValueError (Python's int-from-string limit)."""
    data, _ = valid_manifest()
    text = json.dumps(data, separators=(",", ":")).replace('"tile":32', '"tile":' + "9" * 5000)
    root = write_bundle(tmp_path / "b", text)
    with pytest.raises(ManifestError, match="not valid JSON.*4300"):
        load_bundle(root)


def test_regression_manifest_artifact_name_too_long(tmp_path):
    """An artefact path the OS refuses (a 300-character name) made Path.is_file raise OSError while verifying
    checksums; it is now reported as a checksum problem for that artefact."""
    data, _ = valid_manifest()
    data["artifacts"]["onnx_fp32"]["path"] = "x" * 300
    root = write_bundle(tmp_path / "b", json.dumps(data))
    with pytest.raises(ManifestError, match=r"cannot read x+\.\.\. \(File name too long\)"):
        load_bundle(root, verify=True)


def test_manifest_messages_shorten_huge_values(tmp_path):
    data, _ = valid_manifest()
    data["format"] = "y" * 100_000
    root = write_bundle(tmp_path / "b", json.dumps(data))
    with pytest.raises(ManifestError) as e:
        load_bundle(root)
    assert "format: expected 'co2s-bundle'" in str(e.value) and len(str(e.value)) < 1000
