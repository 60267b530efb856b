"""Inputs as users have them: folders whose files share stems and nest, alpha as nodata, palette/CMYK/EXIF-rotated
images decoded as a viewer shows them, a GeoTIFF alpha band, 16-bit RGB advice."""

from __future__ import annotations

import numpy as np
import pytest
from fakes.runtime import make_bundle, reference_outputs, rgb, truncated_png, write_projected_rgba
from PIL import Image

from co2s.runtime.io import InputOptions, open_source
from co2s.runtime.pipeline import collect_inputs
from co2s.runtime.tiling import NODATA_LABEL


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32, num_classes=4)


def expected_labels(image: np.ndarray) -> np.ndarray:
    return reference_outputs(image[None], 4)["labels"][0]


# ------------------------------------------------------------------------------------------------ folders
def test_nested_folder_with_colliding_stems_labels_every_good_file(tmp_path, bundle, run_cli):
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb(40, 50, 1)).save(src / "scene.png")
    Image.fromarray(rgb(40, 50, 2)).save(src / "scene.jpg", quality=95)
    truncated_png(src / "truncated.png")
    Image.fromarray(rgb(30, 30, 3)).save(src / "truncated.jpg")
    Image.fromarray(rgb(30, 30, 4)).save(src / "sub" / "scene.png")  # same stem, other folder: no collision
    Image.fromarray(rgb(30, 30, 5)).save(src / "sub" / "deeper" / "x.png")
    out = tmp_path / "out"
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
    assert code == 1, err  # the truncated PNG fails, every other input is labelled
    assert "done: 5 ok, 1 failed, 0 skipped" in err
    assert "truncated.png: truncated or corrupt image data" in err
    for rel in ("scene.png", "scene.jpg", "truncated.jpg"):  # colliding stems keep their extension
        assert (out / f"{rel}.labels.png").exists(), rel
    assert not (out / "scene.labels.png").exists()
    assert (out / "sub" / "scene.labels.png").exists()  # the tree is mirrored
    assert (out / "sub" / "deeper" / "x.labels.png").exists()
    assert not (out / "truncated.png.labels.png").exists()
    got = np.asarray(Image.open(out / "scene.png.labels.png"))
    assert np.array_equal(got, expected_labels(rgb(40, 50, 1)))

    # --skip-existing follows the same names: everything done is skipped, the bad file fails again
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out, "--skip-existing"], quiet=True)
    assert "done: 0 ok, 1 failed, 5 skipped" in err


def test_the_same_name_from_two_arguments_refuses_only_the_later_input(tmp_path, bundle, run_cli):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(rgb(20, 20)).save(tmp_path / d / "x.png")
    out = tmp_path / "out"
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "x.png", "--out", out],
        quiet=True,
    )
    assert code == 1
    assert "done: 1 ok, 1 failed, 0 skipped" in err  # the same file twice runs once
    assert "b/x.png: would write the same outputs as" in err
    assert (out / "x.labels.png").exists()


def test_naming_rule_is_case_blind_and_keeps_input_order(tmp_path):
    (tmp_path / "IMG_1.JPG").write_bytes(b"x")
    (tmp_path / "img_1.tif").write_bytes(b"x")
    (tmp_path / "other.png").write_bytes(b"x")
    specs, _ = collect_inputs([tmp_path])
    assert [str(s.rel_stem) for s in specs] == ["IMG_1.JPG", "img_1.tif", "other"]
    assert not any(s.refused for s in specs)


# ------------------------------------------------------------------------------------------------ decoding
def read_all(path, **kw):
    src = open_source(path, InputOptions(**kw))
    return src.read(0, 0, src.height, src.width)


def test_rgba_png_alpha_becomes_the_nodata_mask(tmp_path, bundle, run_cli):
    img = rgb(40, 50)
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[:, :20] = 0
    Image.fromarray(np.dstack([img, alpha]), "RGBA").save(tmp_path / "scene.png")
    px, valid = read_all(tmp_path / "scene.png")
    assert np.array_equal(px, img) and np.array_equal(valid, alpha > 0)
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.png", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    lab = np.asarray(Image.open(tmp_path / "out" / "scene.labels.png"))
    assert (lab[:, :20] == NODATA_LABEL).all()
    assert np.array_equal(lab[:, 20:], expected_labels(img)[:, 20:])


def test_la_png_is_grey_with_an_alpha_mask(tmp_path):
    grey = rgb(20, 30)[..., 0]
    alpha = np.where(np.arange(30) < 10, 0, 255).astype(np.uint8)[None].repeat(20, 0)
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    from co2s.errors import Co2SInputError

    with pytest.raises(Co2SInputError, match="1-band image, the model expects RGB; pass --bands 1"):
        read_all(tmp_path / "la.png")
    px, valid = read_all(tmp_path / "la.png", bands=(1,))
    assert np.array_equal(px, np.dstack([grey] * 3)) and np.array_equal(valid, alpha > 0)


def test_palette_png_is_decoded_to_its_colours(tmp_path):
    img = Image.fromarray(rgb(20, 30)).quantize(16)
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    px, valid = read_all(tmp_path / "p.png")
    assert valid is None and np.array_equal(px, np.asarray(img.convert("RGB")))


def test_palette_png_with_a_transparent_index_masks_it(tmp_path):
    idx = np.zeros((10, 12), np.uint8)
    idx[:, 6:] = 1
    img = Image.fromarray(idx, "P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.save(tmp_path / "pt.png", transparency=0)
    px, valid = read_all(tmp_path / "pt.png")
    assert np.array_equal(valid, idx == 1) and tuple(px[0, 8]) == (200, 100, 50)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = (255, 0, 0)
    img[:, 8:] = (0, 0, 255)
    Image.fromarray(img).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    px, _ = read_all(tmp_path / "c.jpg")
    assert np.abs(px.astype(int) - img).max() < 20  # JPEG loss only: red stays red, blue stays blue


def test_exif_rotated_jpeg_is_transposed_as_a_viewer_shows_it(tmp_path, bundle, run_cli):
    sensor = np.zeros((20, 40, 3), np.uint8)  # stored landscape, 40 wide
    sensor[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(sensor).save(tmp_path / "r.jpg", exif=exif, quality=100)
    px, _ = read_all(tmp_path / "r.jpg")
    assert px.shape == (40, 20, 3)  # shown portrait
    assert px[:10].mean() > 200 and px[12:].mean() < 30  # the white columns are now the top rows
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "r.jpg", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "out" / "r.labels.png")).shape == (40, 20)


def test_16bit_rgb_keeps_the_stretch_advice(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="16-bit RGB TIFF is read through rasterio")
    data = (np.random.default_rng(0).integers(0, 4000, (3, 20, 20))).astype(np.uint16)
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=20, height=20, count=3, dtype="uint16") as ds:
        ds.write(data)
    from co2s.errors import Co2SInputError

    with pytest.raises(Co2SInputError, match="16-bit uint16 data, the model takes 8-bit; pass --stretch"):
        read_all(tmp_path / "s.tif")
    px, _ = read_all(tmp_path / "s.tif", stretch=__import__("co2s.runtime.io", fromlist=["x"]).parse_stretch("minmax"))
    assert px.dtype == np.uint8 and px.max() == 255


def test_geotiff_alpha_band_becomes_the_nodata_mask(tmp_path, bundle, run_cli):
    img = rgb(40, 50)
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[30:] = 0
    write_projected_rgba(tmp_path / "scene.tif", img, alpha)
    px, valid = read_all(tmp_path / "scene.tif")
    assert np.array_equal(px, img) and np.array_equal(valid, alpha > 0)
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "scene.tif", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    import rasterio

    with rasterio.open(tmp_path / "out" / "scene.labels.tif") as ds:
        lab = ds.read(1)
    assert (lab[30:] == NODATA_LABEL).all() and np.array_equal(lab[:30], expected_labels(img)[:30])


def test_geotiff_internal_mask_becomes_the_nodata_mask(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF support needs rasterio")
    img = rgb(20, 20)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", width=20, height=20, count=3, dtype="uint8") as ds:
            ds.write(np.moveaxis(img, 2, 0))
            m = np.full((20, 20), 255, np.uint8)
            m[:5] = 0
            ds.write_mask(m)
    _, valid = read_all(tmp_path / "m.tif")
    assert (~valid[:5]).all() and valid[5:].all()
