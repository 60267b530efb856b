"""Where a frame lies on the ground: the nadir, flat-ground footprint from position, height and heading, in the
local UTM zone (pyproj), and footprints.gpkg with one polygon per placed frame (pyogrio + shapely).

The approximation: the camera looks straight down from `alt_agl` metres over flat ground, the top of the image
faces `yaw` (degrees clockwise from north), and the horizontal field of view `hfov` spans the image width; the
ground sample distance is then 2 * alt * tan(hfov / 2) / width per pixel, the same along both axes (square pixels).
A frame whose camera pitch is more than NADIR_TOLERANCE_DEG from straight down is flagged and not placed: its
footprint is a trapezoid this model cannot draw. The `[geo]` extra (pyproj, pyogrio, shapely); imported only when
telemetry is used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from co2s.errors import Co2SInputError, output_error
from co2s.files import commit_files, remove_quietly, temp_name

from .telemetry import Pose

NADIR_TOLERANCE_DEG = 10.0


@dataclass(frozen=True)
class Footprint:
    epsg: int  # the UTM zone's EPSG code
    corners: tuple[tuple[float, float], ...]  # top-left, top-right, bottom-right, bottom-left (easting, northing)
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f: pixel (col, row) -> (x, y)
    gsd_m: float

    def record(self) -> dict:
        return {"epsg": self.epsg, "corners": [list(c) for c in self.corners], "gsd_m": self.gsd_m}


def utm_epsg(lat: float, lon: float) -> int:
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def off_nadir(pose: Pose) -> bool:
    return pose.pitch is not None and abs(pose.pitch + 90.0) > NADIR_TOLERANCE_DEG


def footprint(pose: Pose, height: int, width: int, hfov_deg: float, epsg: int | None = None) -> Footprint:
    from pyproj import Transformer

    epsg = epsg or utm_epsg(pose.lat, pose.lon)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    cx, cy = to_utm.transform(pose.lon, pose.lat)
    ground_w = 2.0 * pose.alt_agl * math.tan(math.radians(hfov_deg) / 2.0)
    gsd = ground_w / width
    yaw = math.radians(pose.yaw or 0.0)
    right = (math.cos(yaw), -math.sin(yaw))  # image +x (columns) on the ground, (east, north)
    down = (-math.sin(yaw), -math.cos(yaw))  # image +y (rows): away from where the top faces
    # top-left corner of pixel (0, 0)
    c = cx - right[0] * gsd * width / 2 - down[0] * gsd * height / 2
    f = cy - right[1] * gsd * width / 2 - down[1] * gsd * height / 2
    a, b, d, e = right[0] * gsd, down[0] * gsd, right[1] * gsd, down[1] * gsd

    def px(col: float, row: float) -> tuple[float, float]:
        return (a * col + b * row + c, d * col + e * row + f)

    corners = (px(0, 0), px(width, 0), px(width, height), px(0, height))
    return Footprint(epsg, corners, (a, b, c, d, e, f), gsd)


class FootprintLayer:
    """Polygons collected during a run, written once at the end as footprints.gpkg (one layer; time, altitude,
    class fractions and mean confidence per frame), under a temporary name renamed into place. Frames with a
    reason not to be placed (off nadir, a still without GPS, ...) are counted by reason in `unplaced`."""

    def __init__(self, path: Path, classes: list[str]):
        self.path, self.classes = Path(path), classes
        self.rows: list[dict] = []
        self.epsg: int | None = None
        self.unplaced: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.unplaced[reason] = self.unplaced.get(reason, 0) + 1

    def add(self, fp: Footprint, pose: Pose, frame: int, pts_s: float | None, fractions: dict, conf: float) -> None:
        self.epsg = self.epsg or fp.epsg
        if fp.epsg != self.epsg:  # the flight crossed a UTM zone: keep one CRS for the layer
            raise Co2SInputError(f"{self.path}: the flight crosses UTM zones ({self.epsg} -> {fp.epsg})")
        self.rows.append(
            {
                "corners": fp.corners,
                "frame": frame,
                "time_s": pts_s,
                "alt_agl": pose.alt_agl,
                "yaw": pose.yaw,
                "mean_confidence": conf,
                **{f"frac_{name}": float(fractions.get(i, 0.0)) for i, name in enumerate(self.classes)},
            }
        )

    def write(self) -> Path | None:
        if not self.rows:
            return None
        import numpy as np
        import shapely
        from pyogrio.raw import write as write_layer

        geoms = shapely.to_wkb(np.array([shapely.Polygon(r["corners"]) for r in self.rows], dtype=object))
        names = [k for k in self.rows[0] if k != "corners"]
        fields = [
            np.array([r[k] for r in self.rows], np.int64)
            if k == "frame"
            else np.array([np.nan if r[k] is None else r[k] for r in self.rows], np.float64)
            for k in names
        ]
        tmp = temp_name(self.path)
        try:
            with warnings.catch_warnings():  # GDAL would like the temporary name to end in .gpkg too
                warnings.simplefilter("ignore", RuntimeWarning)
                write_layer(
                    str(tmp), geoms, fields, names, driver="GPKG", layer="footprints", geometry_type="Polygon",
                    crs=f"EPSG:{self.epsg}",
                )  # fmt: skip
            commit_files([(tmp, self.path)])
        except OSError as e:
            remove_quietly([tmp])
            raise output_error(self.path, e) from None
        except BaseException:
            remove_quietly([tmp])
            raise
        return self.path


__all__ = ["Footprint", "FootprintLayer", "footprint", "off_nadir", "utm_epsg"]
