"""A synthetic flight: the synthetic scene renderer's ground seen by a nadir camera flying east in a straight line,
encoded as a video with PyAV (H.264, or MPEG-4 Part 2 when PyAV's FFmpeg has no libx264), and the telemetry CSV
that camera would log (co2s-stream --telemetry). Used by the streaming tests, benchmarks/stream_bench.py and
`make demo`:

    python -m co2s.train.data.flight OUT_DIR --seconds 10 --fps 10 --size 240x320 --hfov 60

writes OUT_DIR/flight.mp4 and OUT_DIR/flight.csv. PyAV is the `[video]` extra, imported only to encode.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from co2s.errors import Co2SError, Co2SInputError, output_error
from co2s.files import atomic_write_text, commit_files, remove_quietly, temp_name

from .synthetic import make_large_scene

FPS = 30
INSTALL_VIDEO = "pip install 'co2s[video]'"
# The container for a suffix: the video is written under a temporary name, where FFmpeg cannot guess it.
FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts", ".avi": "avi"}
METRES_PER_DEGREE_LAT = 111_320.0  # spherical Earth: close enough for a path of a few hundred metres


def flight_frames(n: int, size: tuple[int, int] = (48, 64), *, step: int = 3, seed: int = 0) -> Iterator[np.ndarray]:
    """n RGB frames of `size` (h, w), the camera moving `step` pixels east (image right) per frame over one
    continuous synthetic scene."""
    h, w = size
    scene, _ = make_large_scene(seed, h, w + step * (n - 1))
    for i in range(n):
        yield np.ascontiguousarray(scene[:, step * i : step * i + w])


def codec_name() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _av():
    try:
        import av
    except ModuleNotFoundError:
        raise Co2SInputError(f"writing a video needs PyAV, which is not installed: {INSTALL_VIDEO}") from None
    return av


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: int, *, fmt: str | None = None, gop: int = 10
) -> Path:
    """Encode RGB frames (all one size) at a constant `fps`; a keyframe every `gop` frames. Atomic (co2s.files)."""
    av = _av()
    path = Path(path)
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise Co2SInputError(f"{path}: expected a video name ending in {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with av.open(str(tmp), "w", format=fmt) as out:
            st = None
            for rgb in frames:
                if st is None:
                    st = out.add_stream(codec_name(), rate=fps)
                    st.height, st.width = rgb.shape[:2]
                    st.pix_fmt = "yuv420p"
                    st.codec_context.gop_size = gop
                for pkt in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(pkt)
            if st is None:
                raise Co2SInputError(f"{path}: no frames to write")
            for pkt in st.encode(None):
                out.mux(pkt)
        commit_files([(tmp, path)])
    except OSError as e:
        remove_quietly([tmp])
        raise output_error(path, e) from None
    except BaseException:
        remove_quietly([tmp])
        raise
    return path


def write_flight(
    path: str | Path, n: int = 30, size: tuple[int, int] = (48, 64), fps: int = FPS, fmt: str | None = None, *,
    step: int = 3, seed: int = 0,
) -> Path:  # fmt: skip
    """The flight of flight_frames(n, size, step, seed) as a video at `fps`."""
    return write_video(path, flight_frames(n, size, step=step, seed=seed), fps, fmt=fmt)


def flight_telemetry(
    n: int, size: tuple[int, int], fps: float, hfov_deg: float, *, step: int = 3, lat: float = 47.0,
    lon: float = 8.0, alt_agl: float = 80.0,
) -> list[dict]:  # fmt: skip
    """One pose per frame of flight_frames(n, size, step) seen from `alt_agl` metres with a horizontal field of view
    `hfov_deg`: heading north (yaw 0: the top of the image faces north), so `step` pixels right is east, at the
    ground sample distance of co2s.runtime.footprint's nadir model. Keys are the --telemetry CSV's columns."""
    gsd = 2.0 * alt_agl * math.tan(math.radians(hfov_deg) / 2.0) / size[1]
    metres_per_degree_lon = METRES_PER_DEGREE_LAT * math.cos(math.radians(lat))
    return [
        {"time": i / fps, "lat": lat, "lon": lon + i * step * gsd / metres_per_degree_lon, "alt_agl": alt_agl,
         "yaw": 0.0, "pitch": -90.0, "roll": 0.0}
        for i in range(n)
    ]  # fmt: skip


def write_telemetry_csv(path: str | Path, poses: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(poses[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: f"{v:.9g}" if k in ("lat", "lon") else f"{v:.6g}" for k, v in p.items()} for p in poses)
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for flight.mp4 and flight.csv")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", default="240x320", help="frame height x width")
    ap.add_argument("--step", type=int, default=6, help="pixels the camera moves per frame")
    ap.add_argument("--hfov", type=float, default=60.0, help="camera's horizontal field of view, degrees")
    ap.add_argument("--alt", type=float, default=80.0, help="height above ground, metres")
    ap.add_argument("--seed", type=int, default=2025)
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    n = round(args.seconds * args.fps)
    try:
        video = write_flight(args.out / "flight.mp4", n, size, args.fps, step=args.step, seed=args.seed)
    except Co2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    poses = flight_telemetry(n, size, args.fps, args.hfov, step=args.step, alt_agl=args.alt)
    telemetry = write_telemetry_csv(args.out / "flight.csv", poses)
    print(f"{video}: {n} frames, {size[1]}x{size[0]} at {args.fps} fps ({codec_name()}); telemetry {telemetry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
