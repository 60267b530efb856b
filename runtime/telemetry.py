"""Flight telemetry for video frames: DJI `.SRT` subtitle sidecars and plain CSV, interpolated to a frame's time.

DJI writes one subtitle block per frame (or per second on older firmware); the fields differ by model and firmware,
so each is matched by name wherever it appears in the block:

    1
    00:00:00,000 --> 00:00:00,033
    <font size="28">FrameCnt: 1, DiffTime: 33ms
    [iso: 100] [shutter: 1/1000.0] [latitude: 22.543210] [longitude: 113.943210] [rel_alt: 100.000 abs_alt: 152.3]
    [gb_yaw: 12.3 gb_pitch: -90.0 gb_roll: 0.0] </font>

older firmware: `GPS(113.943210,22.543210,18) BAROMETER:100.0` or `HOME(...) ... H 100.0m`. No SRT library reads
these fields (the subtitle parsers give the text only), so the fields are read here with regular expressions.
CSV: a header with `time,lat,lon,alt_agl,yaw` and optionally `pitch,roll` (seconds from the start of the video,
degrees, metres above ground; pitch -90 = looking straight down), read with the csv module.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

FIELDS = ("lat", "lon", "alt_agl", "yaw", "pitch", "roll")


@dataclass(frozen=True)
class Pose:
    t: float
    lat: float
    lon: float
    alt_agl: float
    yaw: float | None = None  # degrees clockwise from north: the direction the top of the image faces
    pitch: float | None = None  # camera (gimbal) pitch; -90 looks straight down
    roll: float | None = None


class Track:
    """Poses in time order; `at(t)` interpolates linearly (yaw the short way round)."""

    def __init__(self, path: Path, poses: list[Pose]):
        self.path = path
        if len(poses) < 1:
            raise Co2SInputError(f"--telemetry {path}: no positions found")
        for a, b in zip(poses, poses[1:]):
            if b.t <= a.t:
                raise Co2SInputError(
                    f"--telemetry {path}: times out of order ({b.t:.3f} s after {a.t:.3f} s); expected increasing times"
                )
        self.poses = poses
        self.t = np.array([p.t for p in poses])

    @property
    def interval(self) -> float:
        """The median time between samples (one frame for per-frame SRT, 1 s for older DJI firmware)."""
        return float(np.median(np.diff(self.t))) if len(self.t) > 1 else 0.0

    @property
    def span(self) -> tuple[float, float]:
        return float(self.t[0]), float(self.t[-1])

    def check_covers(self, start: float, end: float, slack: float = 0.0) -> None:
        t0, t1 = self.span
        if start < t0 - slack or end > t1 + slack:
            raise Co2SInputError(
                f"--telemetry {self.path}: covers {t0:.2f}-{t1:.2f} s, the video runs {start:.2f}-{end:.2f} s; "
                "expected telemetry for the whole video"
            )

    def at(self, t: float, slack: float = 0.0) -> Pose | None:
        t0, t1 = self.span
        if t < t0 - slack or t > t1 + slack:
            return None
        t = min(max(t, t0), t1)
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        if i >= len(self.poses) - 1:
            return self.poses[-1]
        a, b = self.poses[i], self.poses[i + 1]
        w = (t - a.t) / (b.t - a.t)

        def lerp(x, y):
            return None if x is None or y is None else x + (y - x) * w

        yaw = None
        if a.yaw is not None and b.yaw is not None:
            d = (b.yaw - a.yaw + 180.0) % 360.0 - 180.0
            yaw = (a.yaw + d * w) % 360.0
        return Pose(t, lerp(a.lat, b.lat), lerp(a.lon, b.lon), lerp(a.alt_agl, b.alt_agl), yaw,
                    lerp(a.pitch, b.pitch), lerp(a.roll, b.roll))  # fmt: skip


def read_telemetry(path: str | Path) -> Track:
    path = Path(path)
    if not path.is_file():
        raise Co2SInputError(f"--telemetry {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".srt":
        return Track(path, read_srt(path))
    if suffix in (".csv", ".txt"):
        return Track(path, read_csv(path))
    raise Co2SInputError(f"--telemetry {path}: expected a DJI .SRT sidecar or a .csv (time,lat,lon,alt_agl,yaw)")


_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->")
_NUM = r"(-?\d+(?:\.\d+)?)"
_PATTERNS = {
    "lat": re.compile(r"latitude\s*[:=]\s*" + _NUM, re.I),
    "lon": re.compile(r"longi?tude\s*[:=]\s*" + _NUM, re.I),
    "alt_agl": re.compile(r"rel_alt\s*[:=]\s*" + _NUM, re.I),
    "yaw": re.compile(r"gb_yaw\s*[:=]\s*" + _NUM, re.I),
    "pitch": re.compile(r"gb_pitch\s*[:=]\s*" + _NUM, re.I),
    "roll": re.compile(r"gb_roll\s*[:=]\s*" + _NUM, re.I),
}
_OLD_GPS = re.compile(r"GPS\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM, re.I)  # GPS(lon,lat,...)
_OLD_ALT = re.compile(r"(?:BAROMETER\s*:\s*|\bH\s+)" + _NUM, re.I)


def _blocks(text: str):
    """(first line number, block text) of each blank-line-separated subtitle block."""
    start, lines = 1, []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not lines:
                start = n
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            lines = []
    if lines:
        yield start, "\n".join(lines)


def read_srt(path: Path) -> list[Pose]:
    text = path.read_text(encoding="utf-8", errors="replace")
    poses = []
    for first_line, block in _blocks(text):
        m = _TIME.search(block)
        if not m:
            continue
        h, mi, s, ms = m.groups()
        t = int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0
        body = block[m.end() :]
        vals = {}
        for k, pattern in _PATTERNS.items():
            found = pattern.search(body)
            vals[k] = float(found.group(1)) if found else None
        if vals["lat"] is None and (g := _OLD_GPS.search(body)):
            vals["lon"], vals["lat"] = float(g.group(1)), float(g.group(2))
        if vals["alt_agl"] is None and (a := _OLD_ALT.search(body)):
            vals["alt_agl"] = float(a.group(1))
        missing = [k for k in ("lat", "lon", "alt_agl") if vals[k] is None]
        if missing:
            raise Co2SInputError(
                f"--telemetry {path}: line {first_line}: no {', '.join(missing)} in the subtitle block; expected DJI "
                "fields like [latitude: ..] [longitude: ..] [rel_alt: ..] (or GPS(lon,lat,..) and H ..m)"
            )
        poses.append(_pose(path, first_line, t, vals))
    if not poses:
        raise Co2SInputError(f"--telemetry {path}: no subtitle blocks (expected a DJI .SRT sidecar)")
    return poses


def read_csv(path: Path) -> list[Pose]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        need = ("time", "lat", "lon", "alt_agl")
        if not all(k in header for k in need):
            raise Co2SInputError(
                f"--telemetry {path}: header {','.join(header) or '(none)'}; expected time,lat,lon,alt_agl,yaw[,pitch,roll]"
            )
        poses = []
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            try:
                vals = {k: float(row[k]) if row.get(k) else None for k in FIELDS}
                t = float(row["time"])
            except ValueError:
                raise Co2SInputError(f"--telemetry {path}: line {n}: not a number in {row}") from None
            if any(vals[k] is None for k in ("lat", "lon", "alt_agl")):
                raise Co2SInputError(f"--telemetry {path}: line {n}: lat, lon and alt_agl are required")
            poses.append(_pose(path, n, t, vals))
    return poses


def _pose(path: Path, line: int, t: float, v: dict) -> Pose:
    if not (-90 <= v["lat"] <= 90 and -180 <= v["lon"] <= 180) or not all(
        math.isfinite(x) for x in (t, v["lat"], v["lon"], v["alt_agl"])
    ):
        raise Co2SInputError(f"--telemetry {path}: line {line}: latitude/longitude out of range")
    return Pose(t, v["lat"], v["lon"], v["alt_agl"], v.get("yaw"), v.get("pitch"), v.get("roll"))
