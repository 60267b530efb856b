"""A synthetic flight for the streaming tests: a numpy ground scene (fields, roads, buildings as coloured
rectangles on a smooth background) panned along a path, encoded to a short H.264 MP4 with PyAV (MPEG-4 Part 2
when PyAV's FFmpeg has no libx264), plus slow fake backends to check drop accounting against."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from fakes.runtime import FakeBackend

from co2s.bundle import BatchSpec
from co2s.runtime.backends.base import BackendInfo

FPS = 30


def ground(h: int = 240, w: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 30 * np.sin(xx / 23.0), 110 + 30 * np.cos(yy / 17.0), 50 + 0 * xx], -1)
    for _ in range(40):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        dy, dx = rng.integers(6, 30), rng.integers(6, 40)
        img[y : y + dy, x : x + dx] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def flight_frames(n: int, size=(48, 64), seed: int = 0):
    """n frames of `size` (h, w) cut from the scene along a straight path, 3 px per frame."""
    h, w = size
    scene = ground(h + 40, w + 3 * n + 8, seed)
    for i in range(n):
        yield np.ascontiguousarray(scene[20 + (i % 5) : 20 + (i % 5) + h, 3 * i : 3 * i + w])


def codec_name() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_flight(path: Path, n: int = 30, size=(48, 64), fps: int = FPS, fmt: str | None = None) -> Path:
    import av

    path = Path(path)
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec_name(), rate=fps)
        st.height, st.width = size
        st.pix_fmt = "yuv420p"
        st.codec_context.gop_size = 10
        for rgb in flight_frames(n, size):
            for pkt in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


class SleepyBackend(FakeBackend):
    """The fake per-pixel backend, taking `seconds` per call (a model slower than the frame interval)."""

    def __init__(self, tile: int, seconds: float, num_classes: int = 4):
        super().__init__(tile, num_classes, BatchSpec(1, 4, 16), probs=False)
        self.seconds = seconds
        self.calls = 0

    def run(self, tiles, profiler=None, *, outputs=None):
        self.calls += 1
        time.sleep(self.seconds)
        return super().run(tiles, profiler, outputs=outputs)

    def info(self) -> BackendInfo:
        return BackendInfo("sleepy", self.precision)


__all__ = ["FPS", "Fraction", "SleepyBackend", "count_frames", "flight_frames", "write_flight"]
