"""Reading images and label masks into the arrays every co2s dataset returns.

Images become uint8 [H, W, 3] RGB. Labels become uint8 [H, W] with class indices 0..N-1 and
IGNORE_INDEX (255) for "no label", decoded as docs/method.md §11 describes (index labels, optional reduce_zero_label)
or from colour-coded masks (DatasetInfo.label_colors).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from co2s.errors import Co2SInputError

from .registry import IGNORE_INDEX, DatasetInfo

_INDEX_LABEL_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Pillow opens 16-bit RGB(A) PNG/TIFF as mode "RGB(A)" and silently keeps 8 bits; only the raw mode tells.
_HIGH_BIT_DEPTH_RAWMODE = re.compile(r";16[BLN]$")


def open_image(path: str | Path) -> Image.Image:
    """Open lazily (header only) with a Co2SInputError naming the file when that fails."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise Co2SInputError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise Co2SInputError(f"{path}: {e} Cut it into tiles first.") from None
    except OSError as e:  # includes PIL.UnidentifiedImageError
        raise Co2SInputError(f"{path}: cannot read as an image ({e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    with open_image(path) as im:
        return im.height, im.width


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]. Grey, palette and RGBA images are converted; 16-bit is refused."""
    with open_image(path) as im:
        return image_to_array(im, path)


def read_label(path: str | Path, info: DatasetInfo) -> np.ndarray:
    """A label mask as uint8 [H, W] with values 0..info.num_classes-1 or IGNORE_INDEX."""
    with open_image(path) as im:
        return label_to_array(im, info, path)


def read_pair(image_path: str | Path, label_path: str | Path, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """Image and label, checked to have the same size."""
    image = read_image(image_path)
    label = read_label(label_path, info)
    if image.shape[:2] != label.shape:
        raise Co2SInputError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its label {label_path} "
            f"is {label.shape[1]}x{label.shape[0]}; they must have the same size"
        )
    return image, label


def image_to_array(im: Image.Image, source: str | Path, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """RGB uint8 array from an opened PIL image, optionally cropped to box=(left, top, right, bottom)."""
    _refuse_high_bit_depth(im, source)
    try:
        return np.array((im.crop(box) if box else im).convert("RGB"))  # writable copy
    except OSError as e:
        raise Co2SInputError(f"{source}: cannot decode image ({e})") from None


def label_to_array(
    im: Image.Image, info: DatasetInfo, source: str | Path, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Decoded label array from an opened PIL image, optionally cropped to box=(left, top, right, bottom)."""
    try:
        if info.label_colors is not None:
            _refuse_high_bit_depth(im, source)
            return _decode_colors(np.asarray((im.crop(box) if box else im).convert("RGB")), info, source)
        if im.mode not in _INDEX_LABEL_MODES:
            raise Co2SInputError(
                f"{source}: label image has mode {im.mode!r}, but dataset {info.name!r} expects single-channel "
                "index labels (mode L or P, or 16-bit grey). Colour-coded masks need label_colors in the "
                "dataset definition."
            )
        # For mode P this gives the palette indices, which are the class values (as in the reference).
        return _decode_indices(np.asarray(im.crop(box) if box else im), info, source)
    except OSError as e:
        raise Co2SInputError(f"{source}: cannot decode label image ({e})") from None


def _refuse_high_bit_depth(im: Image.Image, source: str | Path) -> None:
    rawmodes = [t.args if isinstance(t.args, str) else t.args[0] for t in im.tile if t.args]
    if im.mode in _HIGH_BIT_DEPTH_MODES or any(_HIGH_BIT_DEPTH_RAWMODE.search(m) for m in rawmodes):
        raise Co2SInputError(
            f"{source}: image has more than 8 bits per sample (mode {im.mode!r}, {', '.join(rawmodes) or 'raw'}); "
            "co2s reads 8-bit RGB. Rescale each band to 0..255 (e.g. a 2-98 % percentile stretch) and save "
            "it as 8-bit PNG/TIFF/JPEG first."
        )


def _decode_indices(values: np.ndarray, info: DatasetInfo, source: str | Path) -> np.ndarray:
    n = info.num_classes
    # lut[raw] = decoded class; raw values that decode to nothing valid are flagged in `valid`.
    raw = np.arange(256)
    lut = raw - 1 if info.reduce_zero_label else raw.copy()
    lut[[0, IGNORE_INDEX] if info.reduce_zero_label else [IGNORE_INDEX]] = IGNORE_INDEX
    valid = (lut < n) | (lut == IGNORE_INDEX)

    if values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > 255):
            bad = values[(values < 0) | (values > 255)].flat[0]
            _bad_label_value(int(bad), info, source)
        values = values.astype(np.uint8)
    present = np.bincount(values.ravel(), minlength=256) > 0
    bad_values = np.flatnonzero(present & ~valid)
    if bad_values.size:
        _bad_label_value(int(bad_values[0]), info, source)
    return lut.astype(np.uint8)[values]


def _bad_label_value(value: int, info: DatasetInfo, source: str | Path) -> None:
    n = info.num_classes
    if info.reduce_zero_label:
        expected = f"1..{n} for the classes, 0 or {IGNORE_INDEX} = ignore (reduce_zero_label)"
    else:
        expected = f"0..{n - 1} for the classes, {IGNORE_INDEX} = ignore"
    raise Co2SInputError(
        f"{source}: label value {value} is not valid for dataset {info.name!r} ({n} classes); "
        f"expected stored values {expected}"
    )


def _pack_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _decode_colors(rgb: np.ndarray, info: DatasetInfo, source: str | Path) -> np.ndarray:
    keys = _pack_rgb(list(info.label_colors) + list(info.ignore_colors))
    targets = np.array([*range(info.num_classes), *[IGNORE_INDEX] * len(info.ignore_colors)], dtype=np.uint8)
    order = np.argsort(keys)
    keys, targets = keys[order], targets[order]

    packed = _pack_rgb(rgb)
    pos = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
    known = keys[pos] == packed
    if not known.all():
        unknown = np.unique(packed[~known])
        shown = ", ".join(str(((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255)) for c in unknown[:5])
        more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
        y, x = np.argwhere(~known)[0]
        raise Co2SInputError(
            f"{source}: mask colour(s) {shown}{more} (first at row {y}, column {x}) are not colours of dataset "
            f"{info.name!r}; expected the class colours {list(info.label_colors)}"
            + (f" or ignore colours {list(info.ignore_colors)}" if info.ignore_colors else "")
        )
    return targets[pos]
