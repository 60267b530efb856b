"""GeoTIFF in, GeoTIFF out: CRS and transform kept, tiled compressed output with a palette, nodata respected,
band choice and 16-bit stretch, windowed reads, and a damaged scene leaves no outputs."""

from __future__ import annotations

import numpy as np
import pytest
from fakes.runtime import make_bundle
from PIL import Image

rasterio = pytest.importorskip("rasterio", reason="GeoTIFF support needs rasterio (pip install 'co2s[geo]')")
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

CRS_UTM40N = CRS.from_epsg(32640)  # Dubai
TRANSFORM = from_origin(300000.0, 2800000.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32, probs=False)


def write_tif(path, data: np.ndarray, *, nodata=None, tiled=True, **kw):
    """data: [bands, H, W]."""
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS_UTM40N,
        transform=TRANSFORM,
        nodata=nodata,
        tiled=tiled,
        **kw,
    )
    if tiled:
        profile.update(blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def scene(h=150, w=210, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_round_trip_keeps_crs_transform_and_matches_png_path(bundle, tmp_path, run_cli):
    data = scene()
    write_tif(tmp_path / "scene.tif", data)
    Image.fromarray(np.moveaxis(data, 0, 2)).save(tmp_path / "scene_png.png")
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "scene.tif", tmp_path / "scene_png.png", "--out", tmp_path / "out"],
        quiet=True,
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "scene.labels.tif") as ds:
        assert ds.crs == CRS_UTM40N and ds.transform == TRANSFORM
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (210, 150, 1, "uint8")
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.compression is not None and ds.compression.value.lower() == "deflate"
        assert ds.nodata == 255
        assert ds.colormap(1)[0][:3] == tuple(bundle_palette(bundle)[0])
        assert ds.overviews(1) == []  # a 210-pixel scene needs none
        labels = ds.read(1)
    png_labels = np.asarray(Image.open(tmp_path / "out" / "scene_png.labels.png"))
    assert np.array_equal(labels, png_labels)
    with rasterio.open(tmp_path / "out" / "scene.confidence.tif") as ds:
        assert ds.crs == CRS_UTM40N and ds.transform == TRANSFORM and ds.dtypes[0] == "uint8" and ds.nodata == 255
        conf = ds.read(1) * ds.scales[0]
    assert np.all((conf > 0) & (conf <= 1))
    png_conf = np.asarray(Image.open(tmp_path / "out" / "scene_png.confidence.png")) / 255.0
    assert np.abs(conf - png_conf).max() <= 1 / 254 + 1 / 255
    assert Image.open(tmp_path / "out" / "scene.overlay.png").size == (210, 150)


def bundle_palette(root):
    from co2s.bundle import load_bundle

    return load_bundle(root).palette.tolist()


def test_nodata_is_respected_and_empty_tiles_skipped(bundle, tmp_path, run_cli):
    data = scene(120, 160)
    data[:, :, :70] = 0  # nodata band on the left
    data[:, 100:, 150:] = 0
    write_tif(tmp_path / "nd.tif", data, nodata=0)
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "nd.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "nd.labels.tif") as ds:
        labels = ds.read(1)
    with rasterio.open(tmp_path / "out" / "nd.confidence.tif") as ds:
        conf = ds.read(1)
    nod = np.all(data == 0, axis=0)
    assert np.all(labels[nod] == 255) and np.all(labels[~nod] < 255)
    assert np.all(conf[nod] == 255) and np.all(conf[~nod] <= 254)


def test_band_choice_and_16_bit_stretch(bundle, tmp_path, run_cli):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 10000, (4, 80, 90), dtype=np.uint16)  # 4-band 16-bit, e.g. B,G,R,NIR
    write_tif(tmp_path / "ms.tif", data)
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "ms.tif", "--out", tmp_path / "o1"], quiet=True)
    assert code == 1 and "ms.tif" in err and "--bands" in err and "--stretch" in err
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "ms.tif", "--out", tmp_path / "o1", "--bands", "3,2,1"], quiet=True
    )
    assert code == 1 and "16-bit" in err and "--stretch" in err
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "ms.tif", "--out", tmp_path / "o2", "--bands", "3,2,1", "--stretch", "percentile:2,98"],
        quiet=True,
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "o2" / "ms.labels.tif") as ds:
        assert ds.crs == CRS_UTM40N and ds.read(1).shape == (80, 90)


def test_reads_are_windowed(bundle, tmp_path, monkeypatch):
    from co2s.bundle import load_bundle
    from co2s.runtime.backends import open_backend
    from co2s.runtime.io import geotiff
    from co2s.runtime.pipeline import run_inference

    write_tif(tmp_path / "big.tif", scene(300, 260))
    seen = []
    orig = geotiff.GeoTiffSource.read

    def spy(self, y0, x0, h, w):
        seen.append((h, w))
        return orig(self, y0, x0, h, w)

    monkeypatch.setattr(geotiff.GeoTiffSource, "read", spy)
    b = load_bundle(bundle)
    summary = run_inference(b, open_backend(b, "ort-cpu"), [tmp_path / "big.tif"], tmp_path / "out")
    assert summary.results[0].status == "ok"
    assert len(seen) == summary.results[0].tiles > 50
    assert max(h for h, _ in seen) <= 32 and max(w for _, w in seen) <= 32


def test_damaged_scene_fails_without_outputs(bundle, tmp_path, run_cli):
    # CreateCopy puts the header first, so the file opens and fails only when a missing tile is read
    write_tif(tmp_path / "src.tif", scene(256, 256), tiled=True, compress="deflate")
    import rasterio.shutil

    rasterio.shutil.copy(
        tmp_path / "src.tif",
        tmp_path / "cut.tif",
        driver="GTiff",
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    raw = (tmp_path / "cut.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: int(len(raw) * 0.6)])
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "cut.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 1 and "cut.tif" in err
    assert not (tmp_path / "out").exists()  # the failed run removes the --out folder it created (co2s.cli)


def test_striped_input_warns(bundle, tmp_path, run_cli):
    write_tif(tmp_path / "striped.tif", scene(60, 600), tiled=False)
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "striped.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 0 and "not internally tiled" in err


def test_large_outputs_get_overviews(bundle, tmp_path, run_cli):
    write_tif(tmp_path / "wide.tif", scene(520, 600))
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "wide.tif", "--out", tmp_path / "out", "--no-overlay"], quiet=True
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "wide.labels.tif") as ds:
        assert ds.overviews(1) == [2]
        assert ds.tags(ns="rio_overview").get("resampling") == "mode"
        labels = ds.read(1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "wide.areas.csv",
        "wide.areas.json",
        "wide.confidence.tif",
        "wide.labels.tif",
    ]
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "wide.tif", "--out", tmp_path / "out2", "--no-overviews"], quiet=True
    )
    with rasterio.open(tmp_path / "out2" / "wide.labels.tif") as ds:
        assert ds.overviews(1) == [] and np.array_equal(ds.read(1), labels)
