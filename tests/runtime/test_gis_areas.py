"""Class areas: NAME.areas.csv / .json per scene (m² and ha on a projected raster, pixels otherwise, said so),
nodata excluded, and a folder run's combined table; every number checked against sums taken from the labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fakes.runtime import make_bundle, rgb, write_projected_rgba
from PIL import Image

from co2s.runtime.tiling import NODATA_LABEL

rasterio = pytest.importorskip("rasterio", reason="areas in m² need a georeferenced raster (rasterio)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32, num_classes=4)


def read_csv(path):
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_projected_scene_areas_match_hand_sums(tmp_path, bundle, run_cli):
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[:, 45:] = 0  # 40 x 5 = 200 nodata pixels
    write_projected_rgba(tmp_path / "scene.tif", rgb(40, 50), alpha, res=2.0)  # 4 m² per pixel
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    with rasterio.open(tmp_path / "out" / "scene.labels.tif") as ds:
        lab = ds.read(1)
    doc = json.loads((tmp_path / "out" / "scene.areas.json").read_text())
    assert doc["units"] == "m2" and doc["crs"] == "EPSG:32640" and doc["pixel_area_m2"] == 4.0
    assert doc["nodata_pixels"] == 200 and doc["data_pixels"] == 1800
    rows = read_csv(tmp_path / "out" / "scene.areas.csv")
    assert [r["class_name"] for r in rows] == ["c0", "c1", "c2", "c3"]
    for c, (r, j) in enumerate(zip(rows, doc["classes"])):
        n = int((lab == c).sum())
        assert int(r["pixels"]) == j["pixels"] == n
        assert float(r["area_m2"]) == j["area_m2"] == 4.0 * n
        assert float(r["area_ha"]) == pytest.approx(4.0 * n / 10_000)
        assert j["share"] == pytest.approx(n / 1800)
    assert sum(j["pixels"] for j in doc["classes"]) == 1800 == int((lab != NODATA_LABEL).sum())


def test_crs_in_feet_converts_to_square_metres(tmp_path, bundle, run_cli):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.open(
        tmp_path / "ft.tif",
        "w",
        driver="GTiff",
        width=20,
        height=20,
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(2263),
        transform=from_origin(1e6, 2e5, 10.0, 10.0),
    ) as ds:  # NY, US feet
        ds.write(np.moveaxis(rgb(20, 20), 2, 0))
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "ft.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "ft.areas.json").read_text())
    assert doc["pixel_area_m2"] == pytest.approx((10 * 0.3048006096) ** 2, rel=1e-6)


def test_unprojected_rasters_give_pixels_only_and_say_so(tmp_path, bundle, run_cli):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.open(
        tmp_path / "geo.tif",
        "w",
        driver="GTiff",
        width=20,
        height=20,
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(4326),
        transform=from_origin(55.0, 25.0, 1e-5, 1e-5),
    ) as ds:
        ds.write(np.moveaxis(rgb(20, 20), 2, 0))
    Image.fromarray(rgb(20, 20)).save(tmp_path / "plain.png")
    out = tmp_path / "out"
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "geo.tif", tmp_path / "plain.png", "--out", out], quiet=True
    )
    assert code == 0, err
    geo = json.loads((out / "geo.areas.json").read_text())
    assert geo["units"] == "pixels" and "EPSG:4326 is not a projected CRS" in geo["note"]
    plain = json.loads((out / "plain.areas.json").read_text())
    assert plain["units"] == "pixels" and "no CRS" in plain["note"]
    assert (out / "plain.areas.csv").read_text().startswith("# the raster has no CRS")
    rows = read_csv(out / "plain.areas.csv")
    assert all(r["area_m2"] == "" for r in rows) and sum(int(r["pixels"]) for r in rows) == 400


def test_folder_run_writes_one_combined_table(tmp_path, bundle, run_cli):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name, res in (("a.tif", 1.0), ("sub/b.tif", 3.0)):
        write_projected_rgba(src / name, rgb(30, 40, seed=len(name)), np.full((30, 40), 255, np.uint8), res=res)
    out = tmp_path / "out"
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
    assert code == 0, err
    rows = read_csv(out / "areas.csv")
    per = {(r["input"], r["class_index"]): r for r in rows}
    a = {r["class_index"]: r for r in read_csv(out / "a.areas.csv")}
    b = {r["class_index"]: r for r in read_csv(out / "sub" / "b.areas.csv")}
    for c in ("0", "1", "2", "3"):
        tot = per[("(all)", c)]
        assert int(tot["pixels"]) == int(a[c]["pixels"]) + int(b[c]["pixels"])
        assert float(tot["area_m2"]) == pytest.approx(int(a[c]["pixels"]) * 1.0 + int(b[c]["pixels"]) * 9.0)
        assert per[("sub/b", c)]["pixels"] == b[c]["pixels"]
    assert sum(int(per[("(all)", c)]["pixels"]) for c in "0123") == 2 * 1200
