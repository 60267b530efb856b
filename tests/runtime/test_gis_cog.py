"""--cog: label and confidence rasters as Cloud-Optimized GeoTIFFs, validated by rio-cogeo; palette, nodata,
georeferencing and nearest-resampled label overviews kept; nothing else left in the output folder."""

from __future__ import annotations

import numpy as np
import pytest
from fakes.runtime import make_bundle, rgb, write_projected_rgba

rasterio = pytest.importorskip("rasterio", reason="COG output needs rasterio")
cogeo = pytest.importorskip("rio_cogeo.cogeo", reason="COG validation needs rio-cogeo (the [dev] extra)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32, num_classes=4)


def test_cog_outputs_validate_and_keep_palette_and_georeferencing(tmp_path, bundle, run_cli):
    alpha = np.full((600, 700), 255, np.uint8)
    alpha[:50] = 0
    write_projected_rgba(tmp_path / "scene.tif", rgb(600, 700), alpha)
    out = tmp_path / "out"
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.tif", "--out", out, "--cog"], quiet=True)
    assert code == 0, err
    plain = tmp_path / "plain"
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.tif", "--out", plain], quiet=True)
    assert code == 0, err
    for name in ("scene.labels.tif", "scene.confidence.tif"):
        valid, errors, _warnings = cogeo.cog_validate(out / name)
        assert valid, (name, errors)
    with rasterio.open(out / "scene.labels.tif") as ds, rasterio.open(plain / "scene.labels.tif") as ref:
        assert ds.crs == ref.crs and ds.transform == ref.transform and ds.nodata == 255
        assert np.array_equal(ds.read(1), ref.read(1))
        assert ds.colormap(1)[1] == ref.colormap(1)[1]
        assert ds.tags()["CO2S_CLASSES"] == ref.tags()["CO2S_CLASSES"]
        assert ds.overviews(1)  # 700 px > one 512 block
        ov = ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
        assert set(np.unique(ov)) <= set(np.unique(ds.read(1)))  # nearest: only values that exist, no blends
    with rasterio.open(out / "scene.confidence.tif") as ds:
        assert ds.scales[0] == pytest.approx(1 / 254)
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted(
        ["scene.labels.tif", "scene.confidence.tif", "scene.overlay.png", "scene.areas.csv", "scene.areas.json"]
    )
