"""Image and label reading: formats, label decoding (docs/method.md §11), colour masks, clear errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from co2s.errors import Co2SInputError
from co2s.train.data import DatasetInfo, get_dataset_info, read_image, read_label

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)


def palette_image(indices: np.ndarray, colors) -> Image.Image:
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    flat = [v for c in colors for v in c]
    im.putpalette(flat + [0] * (768 - len(flat)))
    return im


def write_png16_rgb(path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG, written by hand: Pillow opens these as 8-bit "RGB" and would drop the low byte."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


# -------------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_read_image_lossless_formats(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(RGB).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out, RGB)
    out[0, 0] = 0  # callers may modify what they get


def test_read_image_jpeg(tmp_path):
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 32, 0).repeat(3, 2)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (32, 32, 3) and np.abs(out.astype(int) - smooth).max() < 10


def test_read_image_converts_grey_rgba_palette(tmp_path):
    grey = RGB[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.stack([grey] * 3, -1))
    rgba = np.concatenate([RGB, np.full((6, 7, 1), 7, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), RGB)
    palette_image(np.eye(6, 7), [(10, 20, 30), (40, 50, 60)]).save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (40, 50, 60) and tuple(out[0, 1]) == (10, 20, 30)


@pytest.mark.parametrize("kind", ["grey16_png", "grey16_tif", "rgb16_png"])
def test_read_image_refuses_16_bit(tmp_path, kind):
    path = tmp_path / f"{kind}.{kind.split('_')[1]}"
    if kind == "rgb16_png":
        write_png16_rgb(path, RNG.integers(0, 4096, (5, 4, 3)))
    else:
        Image.fromarray(RNG.integers(0, 4096, (5, 4)).astype(np.uint16)).save(path)
    with pytest.raises(Co2SInputError, match="8 bits") as e:
        read_image(path)
    assert path.name in str(e.value)


def test_read_image_missing_or_not_an_image(tmp_path):
    with pytest.raises(Co2SInputError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(Co2SInputError, match="text.png"):
        read_image(tmp_path / "text.png")


# ------------------------------------------------------------------------------------------------ index labels
def stored_and_expected(info: DatasetInfo, shape=(9, 8)):
    """Random stored label values in the dataset's encoding and what they must decode to."""
    n = info.num_classes
    classes = RNG.integers(0, n, shape)
    ignore = RNG.random(shape) < 0.2
    expected = np.where(ignore, 255, classes).astype(np.uint8)
    if info.reduce_zero_label:
        stored = np.where(ignore, RNG.choice([0, 255], shape), classes + 1)
    else:
        stored = expected
    return stored.astype(np.uint8), expected


@pytest.mark.parametrize("name", ["whdld", "loveda", "potsdam", "gid", "mer", "msl"])
@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_index_labels_decode_per_spec(tmp_path, name, mode):
    info = get_dataset_info(name)
    stored, expected = stored_and_expected(info)
    if mode == "P":  # PIL returns palette indices: the palette colours must not matter
        im = palette_image(stored, [(255 - i, i, 7) for i in range(256)])
    else:
        im = Image.fromarray(stored.astype(np.uint16) if mode == "I;16" else stored)
    im.save(tmp_path / "label.png")
    assert Image.open(tmp_path / "label.png").mode == mode
    out = read_label(tmp_path / "label.png", info)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_reduce_zero_label_mapping(tmp_path):
    info = get_dataset_info("whdld")  # 6 classes stored as 1..6
    Image.fromarray(np.array([[0, 1, 2, 6, 255]], np.uint8)).save(tmp_path / "l.png")
    assert read_label(tmp_path / "l.png", info).tolist() == [[255, 0, 1, 5, 255]]
    gid = get_dataset_info("gid")
    Image.fromarray(np.array([[0, 1, 14, 255]], np.uint8)).save(tmp_path / "g.tif")
    assert read_label(tmp_path / "g.tif", gid).tolist() == [[0, 1, 14, 255]]


@pytest.mark.parametrize("name, bad", [("whdld", 7), ("gid", 15), ("mer", 9), ("mer", 254)])
def test_out_of_range_label_names_file_and_value(tmp_path, name, bad):
    values = np.zeros((4, 4), np.uint8)
    values[2, 3] = bad
    Image.fromarray(values).save(tmp_path / "bad_label.png")
    with pytest.raises(Co2SInputError) as e:
        read_label(tmp_path / "bad_label.png", get_dataset_info(name))
    assert "bad_label.png" in str(e.value) and f"value {bad}" in str(e.value)


def test_out_of_range_16_bit_label(tmp_path):
    Image.fromarray(np.array([[1, 300]], np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(Co2SInputError, match=r"wide.png.*value 300"):
        read_label(tmp_path / "wide.png", get_dataset_info("mer"))


def test_rgb_label_for_index_dataset_is_refused(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb_label.png")
    with pytest.raises(Co2SInputError, match=r"rgb_label.png.*label_colors"):
        read_label(tmp_path / "rgb_label.png", get_dataset_info("whdld"))


# ------------------------------------------------------------------------------------------------ colour masks
DUBAI = get_dataset_info("dubai")
COLOR_TABLE = np.array([*DUBAI.label_colors, (0, 0, 0)], np.uint8)  # index 6 = black = ignore


def colour_mask(shape=(10, 12)):
    codes = RNG.integers(0, 7, shape)
    return codes, np.where(codes == 6, 255, codes).astype(np.uint8)


def test_rgb_colour_mask_decodes_exactly(tmp_path):
    codes, expected = colour_mask()
    Image.fromarray(COLOR_TABLE[codes]).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_label(tmp_path / "mask.png", DUBAI), expected)


def test_palette_colour_mask_decodes_exactly(tmp_path):
    """Like Dubai Tile_2/Tile_4: a "P" PNG whose palette holds the class colours in another order."""
    codes, expected = colour_mask()
    order = [3, 6, 0, 5, 1, 4, 2]  # palette slot -> colour code
    slot_of_code = np.argsort(order)
    palette_image(slot_of_code[codes], [tuple(COLOR_TABLE[c]) for c in order]).save(tmp_path / "pmask.png")
    assert Image.open(tmp_path / "pmask.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "pmask.png", DUBAI), expected)


def test_unknown_colour_names_file_and_colour(tmp_path):
    codes, _ = colour_mask()
    rgb = COLOR_TABLE[codes]
    rgb[3, 4] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd_mask.png")
    with pytest.raises(Co2SInputError) as e:
        read_label(tmp_path / "odd_mask.png", DUBAI)
    assert "odd_mask.png" in str(e.value) and "(1, 2, 3)" in str(e.value) and "row 3, column 4" in str(e.value)


def test_colour_masks_without_ignore_colours(tmp_path):
    info = DatasetInfo(
        "two", ("a", "b"), ((9, 9, 9), (8, 8, 8)), (("a",), ("b",)), label_colors=((10, 0, 0), (0, 10, 0))
    )
    Image.fromarray(np.array([[[10, 0, 0], [0, 10, 0]]], np.uint8)).save(tmp_path / "m.png")
    assert read_label(tmp_path / "m.png", info).tolist() == [[0, 1]]
    Image.fromarray(np.zeros((1, 2, 3), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(Co2SInputError, match=r"black.png.*\(0, 0, 0\)"):
        read_label(tmp_path / "black.png", info)
