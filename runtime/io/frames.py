"""Frame sources: what a camera, a video, a stream or a folder of stills hands the streaming loop.

A frame source yields decoded frames one at a time (uint8 RGB, HWC) with the host time they were captured, so the
loop can measure capture-to-result latency and count what it drops. The kinds (PyAV video and streams, GStreamer
through OpenCV: `video.py`; image sequences and watched folders: `stills.py`) implement `FrameSource`; the address
string is classified here (`parse_address`) and one source is picked in `io/__init__.py` (`open_frame_source`).
"""

from __future__ import annotations

import glob
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".ts", ".m2ts", ".avi", ".webm", ".m4v", ".h264", ".h265")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtp", "udp", "tcp", "srt", "http", "https", "rtmp")
KNOWN_FORMS = (
    "a video file (.mp4, .mkv, .mov, .ts, .avi), rtsp:// rtp:// udp:// http(s):// streams, a V4L2 camera "
    "(/dev/video0 or v4l2:///dev/video0), gst:PIPELINE, an image folder or glob, or --watch DIR"
)


@dataclass
class Frame:
    """One decoded frame. `capture_t` is on the `time.perf_counter()` clock: the decode time for files, the time
    the packet arrived for live sources, the scheduled time for files paced with --realtime."""

    index: int  # 0-based count of frames the source decoded (corrupt ones not counted)
    rgb: np.ndarray  # (h, w, 3) uint8
    capture_t: float
    decode_s: float  # time spent decoding this frame (packet in to pixels out)
    pts_s: float | None = None  # the frame's own timestamp in the source, seconds
    name: str | None = None  # stills: the file it came from
    photo: object | None = None  # stills: their own pose from EXIF/XMP (photo_pose.PhotoPose), when read
    handed_t: float = 0.0  # when the decoder thread handed it to the loop (queue wait starts)


@dataclass(frozen=True)
class Address:
    """A classified source address. kind: file | stream | device | images | watch | gst."""

    kind: str
    target: str  # path, URL, device node or GStreamer pipeline
    live: bool

    def __str__(self) -> str:
        return self.target if self.kind != "gst" else "gst:" + self.target


class FrameSource(ABC):
    """An opened source. `frames()` yields frames until the source ends; `fps` is the source's nominal rate (None
    when unknown, e.g. stills without --fps); `corrupt` counts packets or files skipped as undecodable."""

    address: Address
    fps: float | None = None
    corrupt: int = 0

    @property
    def live(self) -> bool:
        return self.address.live

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    def reopen(self) -> None:
        """Live sources: open again after the stream stopped (--reconnect). Others cannot."""
        raise Co2SInputError(f"{self.address}: cannot be reopened")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def parse_address(text: str, *, watch: bool = False) -> Address:
    """The one address string: classify it without opening anything (the open reports what is wrong)."""
    text = str(text)
    if watch:
        p = Path(text)
        if not p.is_dir():
            raise Co2SInputError(f"--watch {text}: not a folder (expected the folder a camera writes its stills into)")
        return Address("watch", text, live=True)
    if text.startswith("gst:"):
        pipeline = text[4:].strip()
        if not pipeline:
            raise Co2SInputError(f"{text!r}: empty GStreamer pipeline after gst: (e.g. gst:videotestsrc ! appsink)")
        return Address("gst", pipeline, live=True)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", text)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            return parse_address(m.group(2))
        if scheme == "v4l2":
            return Address("device", m.group(2) or "/dev/video0", live=True)
        if scheme in STREAM_SCHEMES:
            return Address("stream", text, live=True)
        raise Co2SInputError(f"{text}: unknown scheme {scheme}:// (expected {KNOWN_FORMS})")
    if text.startswith("/dev/video") or re.fullmatch(r"/dev/v4l/.+", text):
        return Address("device", text, live=True)
    p = Path(text)
    if p.is_dir():
        return Address("images", text, live=False)
    if any(c in text for c in "*?[") and not p.exists():
        if not glob.glob(text):
            raise Co2SInputError(f"{text}: the glob matches no files")
        return Address("images", text, live=False)
    if not p.exists():
        raise Co2SInputError(f"{text}: no such file, folder or device (expected {KNOWN_FORMS})")
    if p.suffix.lower() in STILL_EXTENSIONS:
        return Address("images", text, live=False)
    return Address("file", text, live=False)


# Stills read one per frame (the runtime's image readers); kept here so classifying needs no reader imported.
STILL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".jp2")
