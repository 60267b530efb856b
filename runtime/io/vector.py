"""The label map as polygons: one feature per connected region (4-connected, as rasterio's default), written to a
GeoPackage or GeoJSON through pyogrio.

Regions come from rasterio.features.shapes, run on row strips of the finished labels (read back from the
sink, so memory is a strip of labels plus the polygons, not the scene); the pieces of a region cut by a strip edge
are joined again with shapely (same class, sharing a stretch of that edge). Each feature carries its class index
and name, its pixel count, its area in m² on a projected raster, and the mean confidence of its pixels (the
pixels come from rasterising the strip's own polygons back, so they are exactly the region's). Polygons are built
in pixel coordinates (whole numbers, so the unions are exact) and moved to map coordinates by the raster's
transform at the end; --simplify then works in map units.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

from ..tiling import NODATA_LABEL

VECTOR_FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson")}
STRIP_ROWS = 1024  # rows polygonised at a time


def check_vector_format(fmt: str) -> str:
    """The GDAL driver for --vector FMT, or a one-line error if pyogrio or the installed GDAL cannot write it."""
    if fmt not in VECTOR_FORMATS:
        raise Co2SInputError(f"--vector {fmt}: expected one of {', '.join(VECTOR_FORMATS)}")
    try:
        import pyogrio
    except ImportError:
        raise Co2SInputError(f"--vector {fmt}: polygon output needs pyogrio: pip install 'co2s[geo]'") from None
    driver = VECTOR_FORMATS[fmt][0]
    if driver not in pyogrio.list_drivers(write=True):
        raise Co2SInputError(
            f"--vector {fmt}: the installed GDAL ({pyogrio.__gdal_version_string__}) cannot write {driver}"
        )
    return driver


@dataclass(frozen=True)
class MinArea:
    """--min-area: NUMBER (m² on a projected raster, pixels otherwise), NUMBERm2 or NUMBERpx."""

    value: float
    unit: str  # "auto" | "m2" | "px"

    def pixels(self, pixel_m2: float | None, path) -> float:
        """The threshold in pixels for a raster whose pixel covers `pixel_m2` (None: not projected)."""
        if self.unit == "px" or (self.unit == "auto" and pixel_m2 is None):
            return self.value
        if pixel_m2 is None:
            raise Co2SInputError(
                f"{path}: --min-area {self.value:g}m2 asks for square metres, but the raster has no projected CRS; "
                f"give pixels instead (e.g. --min-area {self.value:g}px)"
            )
        return self.value / pixel_m2


def parse_min_area(text: str | None) -> MinArea | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(m2|px)?\s*", text)
    try:
        value = float(m.group(1)) if m else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Co2SInputError(
            f"--min-area {text!r}: expected a number, optionally with m2 or px (e.g. 500, 500m2, 20px)"
        )
    if value < 0:
        raise Co2SInputError(f"--min-area {text!r}: must be 0 or more")
    return MinArea(value, m.group(2) or "auto")


def check_simplify(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise Co2SInputError(f"--simplify {value:g}: the tolerance (map units) must be 0 or more")
    return value or None


@dataclass
class _Piece:
    cls: int
    geom: object  # shapely Polygon, pixel coordinates
    pixels: int
    conf_sum: float
    top: bool  # touches the strip's upper edge (not the scene's)
    bottom: bool


def _strip_pieces(labels: np.ndarray, conf: np.ndarray | None, y0: int, last: bool) -> list[_Piece]:
    from affine import Affine
    from rasterio.features import rasterize, shapes
    from shapely.geometry import shape

    at = Affine.translation(0, y0)
    geoms, classes = [], []
    for g, v in shapes(labels, mask=labels != NODATA_LABEL, connectivity=4, transform=at):
        geoms.append(shape(g))
        classes.append(int(v))
    if not geoms:
        return []
    # each region's own pixels: its polygon burnt back (regions tile the strip exactly, so no pixel is shared)
    ids = rasterize(
        ((g, i + 1) for i, g in enumerate(geoms)), out_shape=labels.shape, transform=at, fill=0, dtype="int32"
    )
    n = len(geoms) + 1
    counts = np.bincount(ids.ravel(), minlength=n)
    sums = np.bincount(ids.ravel(), weights=None if conf is None else conf.ravel(), minlength=n)
    y1 = y0 + labels.shape[0]
    out = []
    for i, (g, c) in enumerate(zip(geoms, classes)):
        _, miny, _, maxy = g.bounds
        out.append(_Piece(c, g, int(counts[i + 1]), float(sums[i + 1]), y0 > 0 and miny == y0, not last and maxy == y1))
    return out


def polygonize(sink, *, strip_rows: int = STRIP_ROWS) -> list[tuple[int, object, int, float | None]]:
    """(class, pixel-coordinate polygon, pixels, mean confidence or None) per connected region of the sink's
    finished labels, strip by strip, with the pieces cut by strip edges joined."""
    import shapely
    from shapely.strtree import STRtree

    pieces: list[_Piece] = []
    parent: list[int] = []

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    has_conf = False
    prev_bottom: list[int] = []
    for y0 in range(0, sink.height, strip_rows):
        y1 = min(sink.height, y0 + strip_rows)
        labels, conf = sink.finished_rows(y0, y1)
        has_conf = conf is not None
        new = _strip_pieces(labels, conf, y0, y1 == sink.height)
        base = len(pieces)
        pieces += new
        parent += range(base, base + len(new))
        top = [base + k for k, p in enumerate(new) if p.top]
        if prev_bottom and top:
            tree = STRtree([pieces[i].geom for i in top])
            for i in prev_bottom:
                for k in tree.query(pieces[i].geom, predicate="intersects"):
                    j = top[int(k)]
                    if pieces[j].cls == pieces[i].cls and pieces[i].geom.intersection(pieces[j].geom).length > 0:
                        parent[find(j)] = find(i)  # a shared stretch of the strip edge: one region
        prev_bottom = [base + k for k, p in enumerate(new) if p.bottom]
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(find(i), []).append(i)
    regions = []
    for members in groups.values():
        geom = pieces[members[0]].geom if len(members) == 1 else shapely.union_all([pieces[i].geom for i in members])
        px = sum(pieces[i].pixels for i in members)
        mean = sum(pieces[i].conf_sum for i in members) / px if has_conf and px else None
        regions.append((pieces[members[0]].cls, geom, px, mean))
    regions.sort(key=lambda r: (r[1].bounds[1], r[1].bounds[0]))  # top to bottom, left to right
    return regions


def write_polygons(
    sink,
    final: Path,
    *,
    driver: str,
    classes: list[str],
    pixel_m2: float | None,
    min_pixels: float = 0.0,
    simplify: float | None = None,
    strip_rows: int = STRIP_ROWS,
) -> list[tuple[Path, Path]]:
    """NAME.polygons.gpkg|geojson as a temporary file of `sink`; returns its (temporary, final) pair."""
    import warnings

    import pyogrio.raw
    import shapely
    from shapely import affinity

    crs, transform = sink.georeference()
    regions = [r for r in polygonize(sink, strip_rows=strip_rows) if r[2] >= min_pixels]
    geoms = [r[1] for r in regions]
    if transform is not None and not transform.is_identity:
        t = transform
        geoms = [affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g in geoms]
    if simplify:
        geoms = [g.simplify(simplify, preserve_topology=True) for g in geoms]
    multi = any(g.geom_type == "MultiPolygon" for g in geoms)
    if multi:
        geoms = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geoms]
    fields = ["class_index", "class_name", "pixels"]
    data = [
        np.array([r[0] for r in regions], np.int32),
        np.array([classes[r[0]] if r[0] < len(classes) else str(r[0]) for r in regions], object),
        np.array([r[2] for r in regions], np.int64),
    ]
    if pixel_m2 is not None:
        fields.append("area_m2")
        data.append(np.array([r[2] * pixel_m2 for r in regions], np.float64))
    if regions and regions[0][3] is not None:
        fields.append("mean_confidence")
        data.append(np.array([r[3] for r in regions], np.float64))
    tmp = sink._temp(final)
    with warnings.catch_warnings():  # GPKG: "the extension should be gpkg" for the temporary name
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # plain images have none
        pyogrio.raw.write(
            tmp,
            np.array(shapely.to_wkb(geoms), dtype=object) if geoms else np.array([], dtype=object),
            data,
            fields,
            layer=final.name.split(".")[0] or "polygons",
            driver=driver,
            geometry_type="MultiPolygon" if multi else "Polygon",
            crs=crs.to_wkt() if crs is not None else None,
        )
    return [(tmp, final)]
