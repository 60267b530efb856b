"""Video through PyAV (files, network streams, V4L2 cameras), GStreamer pipelines through OpenCV, and the overlay
video written as fragmented MP4.

Why PyAV: it bounds buffering on network streams (`fflags nobuffer`, `flags low_delay`, small probes), which
OpenCV's FFmpeg and GStreamer backends cannot (CAP_PROP_BUFFERSIZE is unsupported there), and it exposes
threading: FRAME (and AUTO) threading holds several frames inside the decoder, which is latency a live camera
cannot afford, so live sources decode with SLICE threading; files, where throughput matters, with AUTO.
PyAV is the `[video]` extra: imported only when a video source or the overlay video is opened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError, output_error

from .frames import Address, Frame, FrameSource

log = logging.getLogger("co2s.runtime")
INSTALL_VIDEO = "pip install 'co2s[video]'"
# Network sources: no input buffering, no reordering delay, a short probe (fewer frames held before the first one
# comes out), TCP for RTSP (UDP RTSP loses whole frames on a busy link) and a socket timeout so a dead stream
# ends the read instead of blocking forever (then --reconnect applies).
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "500000", "analyzeduration": "1000000"}
SOCKET_TIMEOUT_US = "5000000"
NO_FRAMES = "no decodable video frames (a zero-frame, truncated or corrupt file)"


def _av():
    try:
        import av
    except ModuleNotFoundError:
        raise Co2SInputError(f"video sources need PyAV, which is not installed: {INSTALL_VIDEO}") from None
    return av


def open_options(address: Address) -> tuple[dict[str, str], str | None]:
    """(FFmpeg options, input format) for a live address: the options that bound buffering."""
    if address.kind == "device":
        return {"fflags": "nobuffer"}, "v4l2"
    opts = dict(LIVE_OPTIONS)
    scheme = address.target.split("://", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = "tcp"
        opts["timeout"] = SOCKET_TIMEOUT_US
    elif scheme in ("udp", "rtp", "tcp", "srt"):
        opts["timeout"] = SOCKET_TIMEOUT_US
        opts["fifo_size"] = "50000"  # udp: the receive FIFO in 188-byte packets (~9 MB), not FFmpeg's 1.3 GB default
        opts["overrun_nonfatal"] = "1"
    elif scheme in ("http", "https"):
        opts["rw_timeout"] = SOCKET_TIMEOUT_US
    return opts, None


class AvSource(FrameSource):
    """A video file, network stream or V4L2 camera decoded by PyAV."""

    def __init__(self, address: Address, *, scale: float | None = None):
        self.address, self.scale = address, scale
        self.container = None
        self.stream = None
        self.corrupt = 0
        self._index = 0
        self._open()

    def _open(self) -> None:
        av = _av()
        a = self.address
        options, fmt = ({}, None) if not a.live else open_options(a)
        if a.kind == "file" and Path(a.target).stat().st_size == 0:
            raise Co2SInputError(f"{a}: empty file (0 bytes), expected a video")
        try:
            self.container = av.open(a.target, mode="r", format=fmt, options=options, timeout=10.0)
        except av.error.FileNotFoundError:
            raise Co2SInputError(self._what("does not open: no such file or device")) from None
        except av.error.InvalidDataError:
            raise Co2SInputError(
                f"{a}: not a video PyAV can read (unknown format, or a truncated file without its index)"
            ) from None
        except av.error.EOFError:
            raise Co2SInputError(f"{a}: {NO_FRAMES}") from None
        except (av.error.FFmpegError, OSError) as e:
            raise Co2SInputError(self._what(f"does not open: {getattr(e, 'strerror', None) or e}")) from None
        video = [s for s in self.container.streams if s.type == "video"]
        if not video:
            self.container.close()
            raise Co2SInputError(f"{a}: has no video stream (expected a video file or stream)")
        self.stream = video[0]
        # live: SLICE threading only (FRAME/AUTO hold frames back); files: let FFmpeg choose for throughput
        self.stream.thread_type = "SLICE" if a.live else "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        if self.stream.duration and self.stream.time_base:
            self.duration_s = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            self.duration_s = self.container.duration / 1e6  # AV_TIME_BASE
        else:
            self.duration_s = None

    def _what(self, text: str) -> str:
        label = "camera" if self.address.kind == "device" else "stream" if self.address.live else "video"
        return f"{label} {self.address} {text}"

    def check_first_frame(self) -> Frame:
        """Decode the first frame now (before the model loads), so a zero-frame or truncated file is reported
        at once; `frames()` yields it first."""
        it = self.frames()
        try:
            first = next(it)
        except StopIteration:
            raise Co2SInputError(f"{self.address}: {NO_FRAMES}") from None
        self._pending = (first, it)
        return first

    def frames(self) -> Iterator[Frame]:
        pending = getattr(self, "_pending", None)
        if pending is not None:
            self._pending = None
            yield pending[0]
            yield from pending[1]
            return
        yield from self._decode()

    def _decode(self) -> Iterator[Frame]:
        """Frames in order. Corrupt = frames missing from the source's timeline: a gap in the timestamps of what the
        decoder puts out (FFmpeg's H.264 decoder drops most damaged frames silently, without an error to count)
        plus frames it flags as corrupt; where there are no timestamps or no frame rate, each packet that fails to
        decode counts one."""
        av = _av()
        size = None
        tb = self.stream.time_base
        timeline = bool(self.fps) and tb is not None
        gaps = TimelineGaps(self.fps) if timeline else None
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.EOFError, av.error.ExitError):
                break
            except av.error.InvalidDataError:
                self.corrupt += not timeline  # a damaged packet in the container: skip it
                continue
            except (av.error.FFmpegError, OSError) as e:
                if self.address.live:  # a stream that stopped: the loop may reconnect
                    log.warning("%s: read failed: %s", self.address, e)
                    break
                raise Co2SInputError(f"{self.address}: read failed: {e}") from None
            t_in = time.perf_counter()
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                self.corrupt += not timeline
                continue
            for frame in decoded:
                pts = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                if gaps is not None and pts is not None:
                    self.corrupt += gaps.missing(pts)
                if frame.is_corrupt:
                    self.corrupt += 1
                    continue
                if size is None:
                    size = _scaled(frame.height, frame.width, self.scale)
                rgb = frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                t_out = time.perf_counter()
                yield Frame(
                    self._index, rgb, capture_t=t_in if self.address.live else t_out, decode_s=t_out - t_in, pts_s=pts
                )
                self._index += 1

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - closing a dead stream may fail; nothing to save
                pass
            self.container = None


class TimelineGaps:
    """Frames missing between consecutive timestamps at a frame rate. A damaged frame may come out with a garbled
    timestamp: a jump forward followed by a step back is taken back (the jump was not a gap)."""

    def __init__(self, fps: float):
        self.fps = fps
        self.last: float | None = None
        self.before_jump: float | None = None
        self.jump = 0

    def missing(self, pts: float) -> int:
        if self.last is None:
            self.last = pts
            return 0
        if pts > self.last:
            gap = max(0, round((pts - self.last) * self.fps) - 1)
            self.before_jump, self.jump, self.last = self.last, gap, pts
            return gap
        # backwards: the previous timestamp was the odd one out
        undo, self.jump = self.jump, 0
        base = self.before_jump if self.before_jump is not None and self.before_jump < pts else pts
        self.last = pts
        return max(0, round((pts - base) * self.fps) - 1) - undo


def _scaled(h: int, w: int, scale: float | None) -> tuple[int, int]:
    if not scale or scale == 1.0:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


class GstSource(FrameSource):
    """A GStreamer launch string through OpenCV's GStreamer backend (e.g. Jetson's nvarguscamerasrc). The appsink
    is capped (max-buffers=1 drop=true) so frames never pile up inside GStreamer."""

    def __init__(self, address: Address, *, scale: float | None = None):
        self.address, self.scale = address, scale
        self.corrupt = 0
        cv2 = gstreamer_opencv(address)
        pipeline = address.target
        if pipeline.rstrip().endswith("appsink"):
            pipeline += " max-buffers=1 drop=true sync=false"
        self.cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if not self.cap.isOpened():
            raise Co2SInputError(f"{address}: the GStreamer pipeline does not open (try it with gst-launch-1.0)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        self._cv2 = cv2

    def frames(self) -> Iterator[Frame]:
        i = 0
        while True:
            t_in = time.perf_counter()
            ok, bgr = self.cap.read()
            if not ok:
                return
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            if self.scale and self.scale != 1.0:
                h, w = _scaled(*rgb.shape[:2], self.scale)
                rgb = self._cv2.resize(rgb, (w, h), interpolation=self._cv2.INTER_AREA)
            t_out = time.perf_counter()
            yield Frame(i, rgb, capture_t=t_out, decode_s=t_out - t_in)
            i += 1

    def close(self) -> None:
        self.cap.release()


def gstreamer_opencv(address: Address):
    """cv2 when it is importable and built with GStreamer, else one error saying what to install."""
    need = (
        "GStreamer pipelines are read through OpenCV built with GStreamer "
        "(on Jetson: the JetPack python3-opencv; elsewhere an OpenCV build with -D WITH_GSTREAMER=ON; "
        "the opencv-python wheels from PyPI have no GStreamer)"
    )
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        raise Co2SInputError(f"{address}: {need}; cv2 is not installed") from None
    info = cv2.getBuildInformation()
    if not any("GStreamer" in line and "YES" in line for line in info.splitlines()):
        raise Co2SInputError(f"{address}: {need}; this cv2 ({cv2.__version__}) was built without GStreamer")
    return cv2


# --- the overlay video ------------------------------------------------------------------------------------------

# Fragmented MP4: an empty moov up front and a moof+mdat per fragment, so a killed run leaves a file that plays up
# to its last complete fragment (a plain MP4 writes its index only at close: killed, it is unplayable).
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


class OverlayVideo:
    """overlay.mp4 written frame by frame with PyAV. H.264 when PyAV's FFmpeg has libx264 (tuned for zero latency,
    a keyframe, hence a fragment, every `gop` frames), MPEG-4 Part 2 otherwise. Constant frame rate with gaps:
    a frame's timestamp is its capture time in whole frame intervals (at least one after the previous one), so
    dropped frames show as the held previous frame, as the live view would. (Millisecond timestamps were tried:
    libx264 then produces packets the MP4 muxer rejects for some spacings.)"""

    def __init__(self, path: Path, height: int, width: int, fps: float | None, *, gop: int | None = None):
        av = _av()
        self.path = Path(path)
        self.fps = fps or 10.0
        self.height, self.width = height - height % 2, width - width % 2  # yuv420p needs even sizes
        try:
            self.container = av.open(str(self.path), mode="w", format="mp4", options=FRAGMENTED_MP4)
        except (av.error.FFmpegError, OSError) as e:
            raise output_error(self.path, e if isinstance(e, OSError) else OSError(str(e))) from None
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.fps = round(self.fps) or 1  # a whole frame rate: the encoder's clock, 1/fps per tick
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.gop_size = gop or self.fps
        if codec == "libx264":
            self.stream.codec_context.options = {"tune": "zerolatency", "preset": "veryfast"}
        self.codec = codec
        self._t0: float | None = None
        self._last_pts = -1
        self.frames = 0

    def write(self, rgb: np.ndarray, t: float) -> None:
        """Append `rgb` shown from time `t` (seconds, any clock; the first frame is time 0)."""
        av = _av()
        if self._t0 is None:
            self._t0 = t
        pts = max(self._last_pts + 1, int(round((t - self._t0) * self.fps)))
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        frame.pts = pts
        frame.time_base = Fraction(1, self.fps)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None
