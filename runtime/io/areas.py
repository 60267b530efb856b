"""Class areas of one labelled scene: pixels, share and (on a projected raster) m² and hectares per class.

Counts are accumulated strip by strip as the labels are written (`ClassCounts.add`), so a scene of any size costs
one bincount per strip. The pixel's ground area comes from the raster's transform (its determinant: rotated and
sheared grids too) in the CRS's linear unit, converted to metres with pyproj; a raster that is not projected (no
CRS, a geographic CRS in degrees, a plain image) gets pixel counts only, and the files say why. Nodata (label 255)
is not a class: shares are of the pixels that hold data.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import numpy as np

from ..tiling import NODATA_LABEL

M2_PER_HA = 10_000.0


class ClassCounts:
    """Pixels per label value, nodata included (index 255) and excluded from every share."""

    def __init__(self):
        self.counts = np.zeros(256, np.int64)

    def add(self, labels: np.ndarray) -> None:
        self.counts += np.bincount(labels.reshape(-1), minlength=256)[:256]


@dataclass(frozen=True)
class PixelArea:
    """Ground area of one pixel in m², or None with the reason areas are pixels only."""

    m2: float | None
    crs: str | None = None  # e.g. "EPSG:32640"
    note: str = ""


def pixel_area(crs, transform) -> PixelArea:
    """From a rasterio CRS and Affine transform (either may be None)."""
    if crs is None or transform is None or transform.is_identity:
        return PixelArea(None, None, "the raster has no CRS or georeferencing: areas are in pixels only")
    try:
        from pyproj import CRS
    except ImportError:
        return PixelArea(None, None, "pyproj is not installed (pip install 'co2s[geo]'): areas are in pixels only")
    pc = CRS.from_user_input(crs.to_wkt())
    name = pc.to_string()
    if not pc.is_projected:
        return PixelArea(None, name, f"{name} is not a projected CRS (units are not metres): areas are in pixels only")
    to_m = pc.axis_info[0].unit_conversion_factor or 1.0  # e.g. 0.3048 for a CRS in feet
    return PixelArea(abs(transform.determinant) * to_m * to_m, name, "")


def area_rows(counts: ClassCounts, classes: list[str], area: PixelArea) -> list[dict]:
    """One row per class (every class, zero pixels included): index, name, pixels, share, m², ha."""
    data = int(counts.counts.sum() - counts.counts[NODATA_LABEL])
    rows = []
    for i, name in enumerate(classes):
        n = int(counts.counts[i])
        rows.append(
            {
                "class_index": i,
                "class_name": name,
                "pixels": n,
                "share": n / data if data else 0.0,
                "area_m2": None if area.m2 is None else n * area.m2,
                "area_ha": None if area.m2 is None else n * area.m2 / M2_PER_HA,
            }
        )
    return rows


FIELDS = ("class_index", "class_name", "pixels", "share", "area_m2", "area_ha")


def rows_csv(rows: list[dict], fields=FIELDS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k])) for k in fields})
    return buf.getvalue()


def areas_document(rows: list[dict], counts: ClassCounts, area: PixelArea) -> dict:
    return {
        "units": "m2" if area.m2 is not None else "pixels",
        "crs": area.crs,
        "pixel_area_m2": area.m2,
        "note": area.note,
        "data_pixels": int(counts.counts.sum() - counts.counts[NODATA_LABEL]),
        "nodata_pixels": int(counts.counts[NODATA_LABEL]),
        "classes": rows,
    }


def combined_rows(per_input: list[tuple[str, list[dict]]]) -> list[dict]:
    """A folder run's table: every input's rows, then one `(all)` row per class. The total area is given only
    when every input has one (a sum over some of them would read as the whole)."""
    out, totals = [], {}
    all_projected = all(r["area_m2"] is not None for _, rows in per_input for r in rows)
    for name, rows in per_input:
        for r in rows:
            out.append({"input": name, **r})
            t = totals.setdefault(r["class_index"], {"class_name": r["class_name"], "pixels": 0, "area_m2": 0.0})
            t["pixels"] += r["pixels"]
            if all_projected:
                t["area_m2"] += r["area_m2"]
    data = sum(t["pixels"] for t in totals.values())
    for i, t in sorted(totals.items()):
        m2 = t["area_m2"] if all_projected else None
        out.append(
            {
                "input": "(all)",
                "class_index": i,
                "class_name": t["class_name"],
                "pixels": t["pixels"],
                "share": t["pixels"] / data if data else 0.0,
                "area_m2": m2,
                "area_ha": None if m2 is None else m2 / M2_PER_HA,
            }
        )
    return out


def write_areas(sink, counts: ClassCounts, classes: list[str], area: PixelArea, base) -> list:
    """The scene's NAME.areas.csv / NAME.areas.json as temporary files of `sink` (committed with its rasters)."""
    rows = area_rows(counts, classes, area)
    doc = areas_document(rows, counts, area)
    pairs = []
    for final, text in (
        (base.with_name(base.name + ".areas.csv"), (f"# {area.note}\n" if area.note else "") + rows_csv(rows)),
        (base.with_name(base.name + ".areas.json"), json.dumps(doc, indent=2) + "\n"),
    ):
        tmp = sink._temp(final)
        tmp.write_text(text)
        pairs.append((tmp, final))
    return rows, pairs
