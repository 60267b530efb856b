"""Stills as frames: an image sequence (a folder or a glob, in name order, optionally paced with --fps) and a
watched folder (`--watch DIR`) that a survey camera writes its photos into.

A watched file is read only once it is complete: hidden and temporary names (`.name`, `*.tmp`, `*.part`,
`*.partial`, `*~`) are the writer's in-progress names and are skipped until renamed, and any other file must keep
the same size and modification time over two polls (`settle_s` apart) before it is read. A file that still fails
to decode after that is counted as corrupt and skipped, never retried in a loop. The images themselves are decoded
by the runtime's readers (`read`, passed in by io/__init__.py: Pillow, or rasterio for GeoTIFFs). With `geotag`
(the default) each frame also carries the still's own EXIF GPS / XMP pose (runtime/photo_pose.py) for its footprint.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from co2s.errors import Co2SInputError

from .frames import STILL_EXTENSIONS, Address, Frame, FrameSource

log = logging.getLogger("co2s.runtime")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
ReadImage = Callable[[Path], np.ndarray]  # path -> (h, w, 3) uint8 RGB, Co2SInputError when it cannot


def is_still(path: Path) -> bool:
    name = path.name
    return (
        not name.startswith(".")
        and not name.lower().endswith(TEMP_SUFFIXES)
        and path.suffix.lower() in STILL_EXTENSIONS
    )


def resize(rgb: np.ndarray, scale: float | None) -> np.ndarray:
    if not scale or scale == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def _read_still(source, path: Path, t: float) -> tuple[np.ndarray, float, float, object] | None:
    """(rgb, time read, seconds it took, its PhotoPose or None), or None for a file that could not be read
    (counted as corrupt). `t` is the still's time in the sequence, for its pose."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            if source.geotag:  # the pose reader names a damaged EXIF block in one warning of its own
                warnings.filterwarnings("ignore", message="Corrupt EXIF", category=UserWarning)
            rgb = resize(source.read(path), source.scale)
    except Co2SInputError as e:
        source.corrupt += 1
        log.warning("skipped %s", e)
        return None
    photo = None
    if source.geotag:
        from ..photo_pose import read_photo_pose

        photo = read_photo_pose(path, t)
    t1 = time.perf_counter()
    return rgb, t1, t1 - t0, photo


class ImageSequence(FrameSource):
    """A folder (its stills in name order) or a glob. `fps` gives the frames timestamps i/fps (for --realtime
    pacing and the source rate in the summary); without it they come as fast as they decode."""

    geotag = True  # read each still's EXIF/XMP pose (off when a telemetry track places the frames)

    def __init__(self, address: Address, read: ReadImage, *, fps: float | None = None, scale: float | None = None):
        self.address, self.read, self.fps, self.scale = address, read, fps, scale
        self.corrupt = 0
        p = Path(address.target)
        if p.is_dir():
            paths = sorted(q for q in p.iterdir() if q.is_file() and is_still(q))
        elif p.is_file():
            paths = [p]
        else:
            paths = sorted(Path(q) for q in glob.glob(address.target) if Path(q).is_file() and is_still(Path(q)))
        if not paths:
            raise Co2SInputError(
                f"{address}: no images found (looked for {', '.join(STILL_EXTENSIONS)})"
                + ("; a folder of stills that is still being written: use --watch" if p.is_dir() else "")
            )
        self.paths = paths

    def frames(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            pts = i / self.fps if self.fps else None
            got = _read_still(self, path, pts or 0.0)
            if got is not None:
                rgb, t1, decode_s, photo = got
                yield Frame(i - self.corrupt, rgb, t1, decode_s, pts, path.name, photo)


class WatchedFolder(FrameSource):
    """New stills in a folder, in the order they become complete; files already there at the start are skipped
    (a restarted run does not reprocess the flight so far). Ends after `idle_exit_s` without a new file (None:
    runs until stopped)."""

    geotag = True

    def __init__(
        self,
        address: Address,
        read: ReadImage,
        *,
        scale: float | None = None,
        poll_s: float = 0.2,
        settle_s: float = 0.3,
        idle_exit_s: float | None = None,
        include_existing: bool = False,
    ):
        self.address, self.read, self.scale = address, read, scale
        self.poll_s, self.settle_s, self.idle_exit_s = poll_s, settle_s, idle_exit_s
        self.corrupt = 0
        self.fps = None
        self.folder = Path(address.target)
        self._done: set[str] = set() if include_existing else {p.name for p in self._listing()}
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, when it last changed)
        self._first: dict[str, float] = {}  # name -> when it first appeared: the capture time, as near as we know
        self.stop_requested = False

    def _listing(self) -> list[Path]:
        try:
            with os.scandir(self.folder) as it:
                return [Path(e.path) for e in it if e.is_file() and is_still(Path(e.name))]
        except FileNotFoundError:
            raise Co2SInputError(f"--watch {self.folder}: the folder disappeared") from None

    def _ready(self, now: float) -> list[Path]:
        """Files whose size and mtime have not changed for settle_s, oldest first."""
        ready = []
        for p in self._listing():
            if p.name in self._done:
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # renamed or removed between the listing and now
                continue
            sig = (st.st_size, st.st_mtime_ns)
            old = self._seen.get(p.name)
            self._first.setdefault(p.name, now)
            if old is None or old[:2] != sig:
                self._seen[p.name] = (*sig, now)
            elif st.st_size > 0 and now - old[2] >= self.settle_s:
                ready.append((st.st_mtime_ns, p))
        return [p for _, p in sorted(ready)]

    def frames(self) -> Iterator[Frame]:
        index = 0
        last_new = time.perf_counter()
        while not self.stop_requested:
            now = time.perf_counter()
            for path in self._ready(now):
                self._done.add(path.name)
                self._seen.pop(path.name, None)
                appeared = self._first.pop(path.name, time.perf_counter())
                got = _read_still(self, path, 0.0)
                if got is None:
                    continue
                rgb, last_new, decode_s, photo = got
                yield Frame(index, rgb, appeared, decode_s, None, path.name, photo)
                index += 1
            if self.idle_exit_s is not None and time.perf_counter() - last_new > self.idle_exit_s:
                return
            time.sleep(self.poll_s)
