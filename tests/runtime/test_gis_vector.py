"""--vector: polygons of the label map. Rasterising them back gives the label map where regions pass --min-area;
regions cut by strip edges are joined (the strip-by-strip result equals the whole-raster one); fields, areas and
mean confidence checked against the rasters; the option errors are one line before any work."""

from __future__ import annotations

import numpy as np
import pytest
from fakes.runtime import make_bundle, rgb, write_projected_rgba

from co2s.runtime.tiling import NODATA_LABEL

rasterio = pytest.importorskip("rasterio", reason="polygons need rasterio")
pyogrio = pytest.importorskip("pyogrio", reason="polygons are written with pyogrio")
shapely = pytest.importorskip("shapely", reason="polygons are built with shapely")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32, num_classes=4)


def blocky(h, w, seed=0) -> np.ndarray:
    """An image whose labels form regions of many sizes (a pixel classifier on noise gives single pixels)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w]
    img[rng.random((h, w)) < 0.02] = rng.integers(0, 256, 3, dtype=np.uint8)  # some one-pixel specks
    return np.ascontiguousarray(img)


def read_polygons(path):
    meta, _, geoms, fields = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(geoms), dict(zip(meta["fields"], fields))


def burn(geoms, values, shape, transform):
    from rasterio.features import rasterize

    return rasterize(zip(geoms, values), out_shape=shape, transform=transform, fill=NODATA_LABEL, dtype="uint8")


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_polygons_rasterise_back_to_the_labels(fmt, tmp_path, bundle, run_cli):
    alpha = np.full((90, 110), 255, np.uint8)
    alpha[:, 100:] = 0
    write_projected_rgba(tmp_path / "scene.tif", blocky(90, 110), alpha, res=2.0)
    out = tmp_path / "out"
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.tif", "--out", out, "--vector", fmt], quiet=True)
    assert code == 0, err
    with rasterio.open(out / "scene.labels.tif") as ds:
        lab, transform, crs = ds.read(1), ds.transform, ds.crs
    with rasterio.open(out / "scene.confidence.tif") as ds:
        conf = ds.read(1, masked=True).astype(np.float64) / 254
    meta, geoms, f = read_polygons(out / f"scene.polygons.{fmt}")
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == crs
    assert meta["fields"].tolist() == ["class_index", "class_name", "pixels", "area_m2", "mean_confidence"]
    back = burn(geoms, f["class_index"], lab.shape, transform)
    assert np.array_equal(back, lab)  # every pixel, nodata included, no --min-area
    assert f["pixels"].sum() == (lab != NODATA_LABEL).sum()
    assert np.allclose(f["area_m2"], f["pixels"] * 4.0)
    assert np.allclose([g.area for g in geoms], f["area_m2"])
    assert list(f["class_name"][:3]) == [f"c{c}" for c in f["class_index"][:3]]
    # one feature per connected region: each polygon's pixels all have its class, and its mean confidence is theirs
    for g, c, m in list(zip(geoms, f["class_index"], f["mean_confidence"]))[:20]:
        inside = burn([g], [1], lab.shape, transform) == 1
        assert (lab[inside] == c).all()
        assert m == pytest.approx(conf[inside].mean(), abs=1e-6)


def test_min_area_leaves_out_small_regions_and_strips_join(tmp_path, bundle, run_cli):
    write_projected_rgba(tmp_path / "scene.tif", blocky(90, 110, 1), np.full((90, 110), 255, np.uint8), res=2.0)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "scene.tif", "--out", out, "--vector", "gpkg", "--min-area", "100"],
        quiet=True,
    )
    assert code == 0, err
    with rasterio.open(out / "scene.labels.tif") as ds:
        lab, transform = ds.read(1), ds.transform
    _, geoms, f = read_polygons(out / "scene.polygons.gpkg")
    assert f["area_m2"].min() >= 100 and len(geoms)
    back = burn(geoms, f["class_index"], lab.shape, transform)
    kept = back != NODATA_LABEL
    assert np.array_equal(back[kept], lab[kept])  # where regions pass --min-area, the label map
    dropped = lab[~kept]
    assert dropped.size and dropped.size < lab.size // 2

    # strip by strip (7 rows: regions cut many times) gives the same regions as one strip
    from co2s.runtime.io.vector import polygonize

    class Rows:
        height, width = lab.shape

        def finished_rows(self, y0, y1):
            return lab[y0:y1], None

    whole = polygonize(Rows(), strip_rows=10_000)
    strips = polygonize(Rows(), strip_rows=7)
    assert len(strips) == len(whole)
    key = lambda r: (r[0], r[2], round(r[1].area), r[1].bounds)  # noqa: E731
    assert sorted(map(key, strips)) == sorted(map(key, whole))
    assert all(a[1].equals(b[1]) for a, b in zip(sorted(strips, key=key), sorted(whole, key=key)))


def test_plain_image_polygons_are_in_pixels(tmp_path, bundle, run_cli):
    from PIL import Image

    Image.fromarray(blocky(40, 48)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", out, "--vector", "geojson", "--min-area", "10"], quiet=True
    )
    assert code == 0, err
    meta, geoms, f = read_polygons(out / "a.polygons.geojson")
    assert "area_m2" not in meta["fields"].tolist() and f["pixels"].min() >= 10  # pixels, not m²
    lab = np.asarray(Image.open(out / "a.labels.png"))
    from affine import Affine

    back = burn(geoms, f["class_index"], lab.shape, Affine.identity())
    kept = back != NODATA_LABEL
    assert np.array_equal(back[kept], lab[kept])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--vector", "gpkg", "--min-area", "-5"], "error: --min-area '-5': must be 0 or more"),
        (["--vector", "gpkg", "--min-area", "5 acres"], "error: --min-area '5 acres': expected a number"),
        (["--vector", "gpkg", "--simplify", "-1"], "error: --simplify -1: the tolerance (map units) must be 0 or more"),
        (["--min-area", "5"], "error: --min-area applies to polygons: add --vector gpkg or --vector geojson"),
    ],
)
def test_option_errors_are_one_line_before_work(extra, message, tmp_path, bundle, run_cli):
    from PIL import Image

    Image.fromarray(rgb()).save(tmp_path / "a.png")
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "out", *extra], quiet=True)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_min_area_in_m2_on_a_raster_without_crs_fails_that_input_only(tmp_path, bundle, run_cli):
    from PIL import Image

    Image.fromarray(rgb()).save(tmp_path / "a.png")
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "a.png", "--out", tmp_path / "out", "--vector", "gpkg", "--min-area", "50m2"],
        quiet=True,
    )
    assert code == 1
    assert "a.png: --min-area 50m2 asks for square metres, but the raster has no projected CRS; give pixels" in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else True


def test_a_format_gdal_cannot_write_is_refused_before_work(monkeypatch):
    import pyogrio as po

    from co2s.errors import Co2SInputError
    from co2s.runtime.io.vector import check_vector_format

    monkeypatch.setattr(po, "list_drivers", lambda **kw: {"GeoJSON": "rw"})
    with pytest.raises(Co2SInputError, match=r"--vector gpkg: the installed GDAL \(.*\) cannot write GPKG"):
        check_vector_format("gpkg")
    assert check_vector_format("geojson") == "GeoJSON"
