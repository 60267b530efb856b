"""A still's own pose: EXIF GPS through Pillow, the camera's height and attitude from the XMP packet that DJI and
other survey cameras write, and the field of view from the EXIF focal length.

XMP (`drone-dji:RelativeAltitude="+100.20"`, `GimbalYawDegree`, `GimbalPitchDegree`, `GimbalRollDegree`,
`FlightYawDegree`, ...) is read from Pillow's raw packet (`im.info["xmp"]`) as text: the fields are matched by
name whatever their namespace prefix, as attributes or as elements; Pillow's `getxmp()` would need defusedxml, and
the values wanted are plain numbers. EXIF GPS altitude is above sea level, not above the ground, so the height for
the footprint is the XMP RelativeAltitude only (height above the take-off point: flat-ground approximation).

Field of view across the image width: FocalLength with the sensor width from FocalPlaneXResolution (the
physical sensor), else the 35 mm equivalent focal length, hfov = 2 atan(36 / (2 f35)).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

from .telemetry import Pose

log = logging.getLogger("co2s.runtime")
# why a still has no footprint -> what to say about it (once per run)
MISSING = {
    "no_gps": "no GPS position in its EXIF",
    "no_altitude": "no height above ground (XMP RelativeAltitude) in its metadata",
    "bad_exif": "damaged EXIF",
    "no_hfov": "no field of view: no focal length in its EXIF (give --camera-hfov DEG)",
}
RESOLUTION_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, um
_NUM = r"([+-]?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class PhotoPose:
    pose: Pose | None
    hfov_deg: float | None  # from EXIF; None when it has no focal length
    missing: str | None = None  # a MISSING key when there is no pose


def xmp_number(xmp: str, name: str) -> float | None:
    """`prefix:Name="1.5"` (attribute) or `<prefix:Name>1.5</prefix:Name>` (element), any prefix."""
    m = re.search(rf"[\s<:]{name}\s*=\s*[\"']\s*{_NUM}", xmp) or re.search(rf"<(?:[\w-]+:)?{name}>\s*{_NUM}", xmp)
    return float(m.group(1)) if m else None


def _degrees(value, ref) -> float | None:
    """EXIF (degrees, minutes, seconds) rationals and an N/S/E/W reference -> signed decimal degrees."""
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, tuple) else (value,))]
    deg = sum(p / 60.0**i for i, p in enumerate(parts[:3]))
    if not math.isfinite(deg):
        raise ValueError(f"GPS coordinate {value!r} is not a number")
    return -deg if str(ref or "").strip().upper() in ("S", "W") else deg


def hfov_from_exif(exif_ifd: dict, width_px: int) -> float | None:
    b = ExifTags.Base
    f = float(exif_ifd.get(b.FocalLength) or 0)
    xres = float(exif_ifd.get(b.FocalPlaneXResolution) or 0)
    unit = RESOLUTION_UNIT_MM.get(int(exif_ifd.get(b.FocalPlaneResolutionUnit) or 2))
    if f > 0 and xres > 0 and unit and math.isfinite(f * xres):
        sensor_w_mm = (exif_ifd.get(b.ExifImageWidth) or width_px) / xres * unit
        return math.degrees(2 * math.atan(sensor_w_mm / (2 * f)))
    f35 = float(exif_ifd.get(b.FocalLengthIn35mmFilm) or 0)
    if f35 > 0:
        return math.degrees(2 * math.atan(36.0 / (2 * f35)))
    return None


def read_photo_pose(path: Path, t: float = 0.0) -> PhotoPose:
    """The pose of the still at `path`; a still without one says why (`missing`), a damaged EXIF block is one
    warning, never an exception."""
    try:
        # Pillow reports a damaged EXIF block as a UserWarning ("Corrupt EXIF data") and returns what it could read
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as im:
                exif = im.getexif()
                gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
                exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
                xmp = im.info.get("xmp") or b""
                width = im.width
        damaged = [str(w.message) for w in caught if "exif" in str(w.message).lower()]
        if damaged:
            raise ValueError(damaged[0].strip())
        g = ExifTags.GPS
        lat = _degrees(gps.get(g.GPSLatitude), gps.get(g.GPSLatitudeRef))
        lon = _degrees(gps.get(g.GPSLongitude), gps.get(g.GPSLongitudeRef))
        hfov = hfov_from_exif(exif_ifd, width)
    except (OSError, UnidentifiedImageError) as e:
        log.warning("%s: cannot read its metadata (%s); no pose for this still", path, e)
        return PhotoPose(None, None, "bad_exif")
    except (ValueError, TypeError, ZeroDivisionError, KeyError) as e:
        log.warning("%s: damaged EXIF (%s); no pose for this still", path, e)
        return PhotoPose(None, None, "bad_exif")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return PhotoPose(None, hfov, "no_gps")
    text = xmp.decode("utf-8", errors="replace") if isinstance(xmp, bytes) else str(xmp)
    alt = xmp_number(text, "RelativeAltitude")
    if alt is None:
        return PhotoPose(None, hfov, "no_altitude")
    yaw = xmp_number(text, "GimbalYawDegree")
    yaw = xmp_number(text, "FlightYawDegree") if yaw is None else yaw
    pose = Pose(
        t,
        lat,
        lon,
        alt,
        None if yaw is None else yaw % 360.0,
        xmp_number(text, "GimbalPitchDegree"),  # the camera's; the aircraft's own pitch says nothing about it
        xmp_number(text, "GimbalRollDegree"),
    )
    return PhotoPose(pose, hfov)
