"""Overlays carry a legend (a swatch and a name per class) and use colours that can be told apart: a bundle colour
too close to an earlier class's is replaced in the quick-look (the labels raster keeps the bundle's palette)."""

from __future__ import annotations

import numpy as np
from fakes.runtime import make_bundle, rgb
from PIL import Image

from co2s.runtime.io.sinks import MIN_DELTA_E, _lab, draw_legend, overlay_image, quicklook, quicklook_palette

DUBAI = np.array([[60, 16, 152], [132, 41, 246], [110, 193, 228], [254, 221, 58], [226, 169, 41], [155, 155, 155]])


def min_delta_e(pal) -> float:
    lab = _lab(np.asarray(pal, np.uint8))
    d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(lab), 1)].min())


def test_close_colours_are_replaced_and_distinct_ones_kept():
    assert min_delta_e(DUBAI) < 25  # Vegetation and Water: two yellows
    pal = quicklook_palette(DUBAI)
    assert min_delta_e(pal) >= MIN_DELTA_E
    assert (pal[0] == DUBAI[0]).all() and (pal[2] == DUBAI[2]).all() and (pal[3] == DUBAI[3]).all()
    apart = np.array([[255, 0, 0], [0, 0, 255], [0, 200, 0]])
    assert (quicklook_palette(apart) == apart).all()


def test_legend_is_drawn_in_the_corner_of_a_large_enough_overlay():
    img, lab = rgb(200, 300), np.zeros((200, 300), np.uint8)
    lab[:, 150:] = 1
    pal = np.array([[255, 0, 0], [0, 0, 255]])
    plain = overlay_image(img, lab, pal)
    got = quicklook(img, lab, pal, ["water", "road"])
    assert got.shape == plain.shape
    changed = np.any(got != plain, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() > 100 and xs.max() < 150  # only the lower-left corner
    box = got[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3)
    for colour in pal:  # both swatches are in the box
        assert (box == colour).all(axis=1).any()
    small = rgb(20, 20)
    assert np.array_equal(draw_legend(small, pal, ["water", "road"]), small)  # would cover the image: left out


def test_infer_overlay_has_the_legend_and_the_image_size(tmp_path, run_cli):
    bundle = make_bundle(tmp_path / "b", tile=32, num_classes=4)
    Image.fromarray(rgb(160, 240)).save(tmp_path / "a.png")
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "out"], quiet=True)
    assert code == 0, err
    ov = np.asarray(Image.open(tmp_path / "out" / "a.overlay.png"))
    assert ov.shape == (160, 240, 3)
    assert (ov[-12:, 2:40] == 255).all(axis=2).any()  # the legend's white box
