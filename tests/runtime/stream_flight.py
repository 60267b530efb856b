"""The streaming tests' flight (co2s.train.data.flight: the synthetic scene renderer panned along a path, encoded
with PyAV; 48x64 frames at 30 fps by default), a frame counter, and slow fake backends to check drop accounting
against."""

from __future__ import annotations

import time
from pathlib import Path

from fakes.runtime import FakeBackend

from co2s.bundle import BatchSpec
from co2s.runtime.backends.base import BackendInfo
from co2s.train.data.flight import FPS, codec_name, flight_frames, write_flight


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


__all__ = ["FPS", "SleepyBackend", "codec_name", "count_frames", "flight_frames", "write_flight"]
