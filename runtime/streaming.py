"""The onboard loop (`co2s.runtime.stream`; this module is not named stream so that the name stays the function): frames from a camera, stream, video or folder -> labels, with every drop counted.

    for r in co2s.runtime.stream("bundles/potsdam", "rtsp://192.168.1.10/live"):
        r.labels, r.confidence          # (h, w) uint8 classes and float32 confidence of the newest frame
        r.latency_s, r.stages           # capture-to-result latency; decode/queue_wait/preprocess/compute/postprocess
        r.dropped                       # frames dropped since the previous result: {"behind", "stride", ...}

A decoder thread reads the source and hands frames to the loop through a bounded hand-over, so memory does not
grow with how far behind the model is:

- `drop="latest"` (default for live sources): a one-frame slot; a newer frame replaces an unread one, which is
  counted as dropped "behind". The model always works on the newest frame.
- `drop="none"` (default for files, image sequences and watched folders): a small bounded queue; the decoder waits for the model.
  A live source under `none` is held back in the OS socket buffer and FFmpeg's capped FIFO, whose overflow
  FFmpeg discards (not counted here): use it for recordings, not cameras.
- `stride=N`: only every Nth decoded frame is offered (the others are dropped "stride"); `realtime=True` paces a
  file at its frame rate and takes each frame's scheduled time as its capture time, so a recorded flight
  behaves like the live camera (with a slow model: `latest` drops, `none` falls behind and its latency grows).

Accounting: frames decoded = processed + dropped behind + dropped stride + dropped stopped (queued when the run
was stopped); packets or stills that could not be decoded are counted as "corrupt" (not decoded). A live source
that ends is reopened up to `reconnect` times with a growing backoff, each counted.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from co2s.bundle import Bundle, load_bundle
from co2s.errors import Co2SInputError

from .backends import Backend, open_backend
from .frame_segmenter import FrameSegmenter
from .io import Frame, FrameSource, InputOptions, open_frame_source
from .io.stills import resize

log = logging.getLogger("co2s.runtime")
DROP_POLICIES = ("latest", "none")
DROP_REASONS = ("behind", "stride", "corrupt", "stopped")
STAGES = ("decode", "queue_wait", "preprocess", "compute", "postprocess")
QUEUE_FRAMES = 4  # drop="none": decoded frames waiting for the model at most
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
PACING_JUMP_S = 2.0  # --realtime: a timestamp further ahead than this (or behind) is a discontinuity


@dataclass(frozen=True)
class StreamOptions:
    drop: str | None = None  # latest | none; None: latest for live sources, none otherwise
    stride: int = 1
    realtime: bool = False
    fps: float | None = None  # image sequences: their frame rate
    frame_scale: float | None = None  # scale frames before tiling (0.5: half size)
    overlap: int | None = None
    blend: bool | None = None
    batch: int | None = None
    reconnect: int = 0
    max_frames: int | None = None  # stop after this many processed frames
    idle_exit_s: float | None = None  # --watch: stop after this long without a new still
    telemetry: str | os.PathLike | None = None  # DJI .SRT or CSV: a pose per frame, a ground footprint
    camera_hfov: float | None = None  # degrees across the image width (telemetry: needed; stills: else EXIF's)
    input: InputOptions = field(default_factory=InputOptions)


@dataclass
class StreamResult:
    """One processed frame."""

    index: int  # the frame's number among the decoded frames (gaps: dropped frames)
    seq: int  # 0, 1, 2 ... among processed frames
    rgb: np.ndarray  # the frame as processed (after --frame-scale)
    labels: np.ndarray
    confidence: np.ndarray
    capture_t: float  # perf_counter clock
    result_t: float
    pts_s: float | None
    name: str | None
    stages: dict[str, float]  # seconds
    dropped: dict[str, int]  # since the previous result, by reason
    tiles: int
    pose: object | None = None  # telemetry.Pose at the frame's time (with --telemetry, or a still's EXIF/XMP)
    footprint: object | None = None  # footprint.Footprint; None when off nadir or without telemetry
    off_nadir: bool = False
    unplaced: str | None = None  # why a still has no footprint (photo_pose.MISSING), or "off_nadir"

    @property
    def latency_s(self) -> float:
        return self.result_t - self.capture_t

    def record(self) -> dict:
        """The frames.jsonl line (without outputs)."""
        counts = np.bincount(self.labels.ravel(), minlength=1)
        total = max(1, self.labels.size)
        return {
            "seq": self.seq,
            "frame": self.index,
            "name": self.name,
            "pts_s": self.pts_s,
            "capture_unix": _unix(self.capture_t),
            "latency_ms": round(self.latency_s * 1e3, 3),
            "stages_ms": {k: round(v * 1e3, 3) for k, v in self.stages.items()},
            "dropped": self.dropped,
            "tiles": self.tiles,
            "size": list(self.labels.shape),
            "class_fractions": {int(c): round(float(n) / total, 5) for c, n in enumerate(counts) if n},
            "mean_confidence": round(float(self.confidence.mean()), 5),
            **self._geo(),
        }

    def _geo(self) -> dict:
        if self.pose is None:
            return {} if self.unplaced is None else {"pose": None, "unplaced": self.unplaced}
        p = self.pose
        return {
            "unplaced": self.unplaced,
            "pose": {"lat": p.lat, "lon": p.lon, "alt_agl": p.alt_agl, "yaw": p.yaw, "pitch": p.pitch, "roll": p.roll},
            "off_nadir": self.off_nadir,
            "footprint": None if self.footprint is None else self.footprint.record(),
        }


_CLOCK_OFFSET = time.time() - time.perf_counter()


def _unix(t: float) -> float:
    return round(t + _CLOCK_OFFSET, 6)


class DropCounter:
    """Drop and frame counts, written by the decoder thread and read by the loop."""

    def __init__(self):
        self._lock = threading.Lock()
        self.decoded = 0
        self.processed = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.reconnects = 0
        self._reported = dict.fromkeys(DROP_REASONS, 0)

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def sync_corrupt(self, n: int) -> None:
        """The source counts what it could not decode; copied here so results report it with the other reasons."""
        with self._lock:
            self.dropped["corrupt"] = n

    def since_last(self) -> dict[str, int]:
        with self._lock:
            out = {k: self.dropped[k] - self._reported[k] for k in DROP_REASONS}
            self._reported = dict(self.dropped)
        return out


class LatestSlot:
    """A one-frame hand-over: `put` replaces an unread frame (counted dropped 'behind')."""

    def __init__(self, counter: DropCounter):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.counter = counter

    def put(self, item, stop: threading.Event) -> None:
        with self._cond:
            if self._item is not None:
                self.counter.add("behind")
            self._item = item
            self._cond.notify()

    def close(self, stop: threading.Event) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float = 0.2):
        """The newest frame; None at the end; raises queue.Empty after `timeout` without one."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            if self._item is not None:
                item, self._item = self._item, None
                return item
            if self._closed:
                return None
            raise queue.Empty

    def leftover(self) -> int:
        with self._cond:
            n, self._item = int(self._item is not None), None
            return n


class BoundedQueue:
    """`drop="none"`: the decoder blocks while QUEUE_FRAMES frames wait."""

    def __init__(self, size: int = QUEUE_FRAMES):
        self._q: queue.Queue = queue.Queue(maxsize=size)

    def put(self, item, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, stop: threading.Event) -> None:
        """The end marker, after the frames still queued (never in place of one: each is processed or, if the
        loop stopped, counted by `leftover`). A stopped loop reads no more, so it needs no marker."""
        while not stop.is_set():
            try:
                self._q.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self, timeout: float = 0.2):
        return self._q.get(timeout=timeout)

    def leftover(self) -> int:
        n = 0
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return n
            n += item is not None


class FrameStream:
    """Iterate for results (see the module docstring); `stop()` from any thread (or a signal handler) ends the
    iteration after the frame in flight; `summary()` gives the counts and latency percentiles so far."""

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike,
        source: FrameSource | str,
        options: StreamOptions = StreamOptions(),
        *,
        backend: Backend | str = "auto",
        precision: str = "auto",
        watch: bool = False,
        warmup: int = 1,
        **backend_kw,
    ):
        if options.drop is not None and options.drop not in DROP_POLICIES:
            raise Co2SInputError(f"drop={options.drop!r}: expected one of {', '.join(DROP_POLICIES)}")
        if options.stride < 1:
            raise Co2SInputError(f"stride={options.stride}: expected 1 or more")
        if options.frame_scale is not None and not 0 < options.frame_scale <= 4:
            raise Co2SInputError(f"--frame-scale {options.frame_scale}: expected a factor in (0, 4], e.g. 0.5")
        self.options = options
        # the source first: a bad address is reported before the model loads
        self.source = (
            source
            if isinstance(source, FrameSource)
            else open_frame_source(
                source,
                watch=watch,
                fps=options.fps,
                scale=options.frame_scale,
                options=options.input,
                idle_exit_s=options.idle_exit_s,
            )
        )
        try:
            self.track = self._telemetry()
        except BaseException:
            self.source.close()
            raise
        self._scale_here = isinstance(source, FrameSource) and options.frame_scale not in (None, 1.0)
        try:
            self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
            self.backend = (
                backend if isinstance(backend, Backend) else open_backend(self.bundle, backend, precision, **backend_kw)
            )
        except BaseException:
            self.source.close()
            raise
        self._own_backend = not isinstance(backend, Backend)
        # --watch: every still covers new ground and they come every 2-3 s, so each one is processed by default
        self.drop = options.drop or ("latest" if self.source.live and self.source.address.kind != "watch" else "none")
        blend = self.bundle.has_probs if options.blend is None else options.blend
        self.segment = FrameSegmenter(
            self.backend,
            overlap=options.overlap,
            blend=blend,
            num_classes=self.bundle.num_classes,
            batch=options.batch,
        )
        if warmup:
            self.backend.warmup(warmup, min(self.segment.batch, self.backend.batch.max))
        self.counter = DropCounter()
        self._stop = threading.Event()
        self._handover = LatestSlot(self.counter) if self.drop == "latest" else BoundedQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._latency = array("d")
        self._stage_samples = {s: array("d") for s in STAGES}
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._first_pts: float | None = None
        self._last_pts: float | None = None
        self._said: set[str] = set()

    def _telemetry(self):
        """The telemetry track, checked against the video before any model loads (None without --telemetry;
        stills then carry their own EXIF/XMP poses, placed when pyproj is there)."""
        o = self.options
        stills = hasattr(self.source, "geotag")
        if o.camera_hfov is not None and not 0 < o.camera_hfov < 180:
            raise Co2SInputError(f"--camera-hfov {o.camera_hfov}: expected degrees in (0, 180), e.g. 84")
        if o.telemetry is None:
            if o.camera_hfov is not None and not stills:
                raise Co2SInputError(
                    "--camera-hfov applies with --telemetry or to stills (the frames need positions to place)"
                )
            if stills:
                try:
                    import pyproj
                except ImportError:
                    log.warning("stills are not placed on the ground: footprints need pip install 'co2s[geo]'")
                    self.source.geotag = False
            return None
        if stills:
            self.source.geotag = False  # the track places them
        import pyproj  # noqa: F401 - the [geo] extra: missing, say so now rather than at the first frame

        from .telemetry import read_telemetry

        if o.camera_hfov is None or not 0 < o.camera_hfov < 180:
            raise Co2SInputError(
                f"--telemetry {o.telemetry}: geotagging needs --camera-hfov DEG, the camera's horizontal field of "
                "view (0-180, e.g. 84 for a DJI Mavic 3 wide camera)"
            )
        track = read_telemetry(o.telemetry)
        duration = getattr(self.source, "duration_s", None)
        if duration:
            frame_s = 1.0 / (self.source.fps or 30.0)
            track.check_covers(0.0, duration - frame_s, slack=self._slack(track))
        return track

    def _slack(self, track) -> float:
        """How far past its ends a track is held: one of its own sample intervals plus a frame."""
        return track.interval + 1.0 / (self.source.fps or 30.0)

    def _place(self, frame: Frame, h: int, w: int):
        """(pose, footprint, off_nadir, why unplaced) of a frame: from the track at its source time, or from a
        still's own EXIF/XMP."""
        hfov = self.options.camera_hfov
        if self.track is not None:
            pose = None if frame.pts_s is None else self.track.at(frame.pts_s, slack=self._slack(self.track))
        elif frame.photo is not None:
            pose, hfov = frame.photo.pose, hfov or frame.photo.hfov_deg
            if pose is None or hfov is None:
                return pose, None, False, self._unplaced(frame, frame.photo.missing or "no_hfov")
        else:
            return None, None, False, None
        if pose is None:
            return None, None, False, None
        from .footprint import footprint, off_nadir

        if off_nadir(pose):
            return pose, None, True, "off_nadir"  # flagged, not placed: a tilted camera sees a trapezoid
        return pose, footprint(pose, h, w, hfov), False, None

    def _unplaced(self, frame: Frame, why: str) -> str:
        """Say once per reason why stills go without a footprint (each is counted in the summary)."""
        if why not in self._said and why != "bad_exif":  # a damaged block was named when it was read
            from .photo_pose import MISSING

            self._said.add(why)
            log.warning("%s: %s; stills like it get no footprint (counted in the summary)", frame.name, MISSING[why])
        return why

    # --- the decoder thread ---------------------------------------------------------------------------------

    def _decode_loop(self) -> None:
        src, opts, c = self.source, self.options, self.counter
        attempts = 0
        t_origin = None
        last_pts = 0.0
        try:
            while True:
                for frame in src.frames():
                    if self._stop.is_set():
                        return
                    if opts.realtime and not src.live and frame.pts_s is not None:  # a live source paces itself
                        if t_origin is None or not 0 <= frame.pts_s - last_pts <= PACING_JUMP_S:
                            # the first frame, or a timestamp discontinuity (a new stream epoch, a damaged frame):
                            # re-anchor so it is due now rather than sleeping until a garbled time
                            t_origin = time.perf_counter() - frame.pts_s
                        last_pts = frame.pts_s
                        due = t_origin + frame.pts_s
                        wait = due - time.perf_counter()
                        if wait > 0 and self._stop.wait(wait):
                            return
                        frame.capture_t = due  # the camera would have captured it then, ready or not
                    c.decoded += 1
                    if frame.index % opts.stride:
                        c.add("stride")
                        continue
                    frame.handed_t = time.perf_counter()
                    self._handover.put(frame, self._stop)
                if self._stop.is_set() or not src.live or attempts >= opts.reconnect:
                    return
                delay = BACKOFF_S[min(attempts, len(BACKOFF_S) - 1)]
                attempts += 1
                c.reconnects += 1
                log.warning(
                    "%s: the stream ended; reconnecting in %.1f s (%d of %d)",
                    src.address,
                    delay,
                    attempts,
                    opts.reconnect,
                )
                if self._stop.wait(delay):
                    return
                try:
                    src.reopen()
                except Co2SInputError as e:
                    log.warning("%s", e)
                    if attempts >= opts.reconnect:
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which raises it
            self._error = e
        finally:
            self._handover.close(self._stop)

    # --- the loop ---------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamResult]:
        if self._t_start is not None:
            raise RuntimeError("a FrameStream is iterated once; open a new one with stream(...)")
        self._t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._decode_loop, name="co2s-decode", daemon=True)
        self._thread.start()
        seq = 0
        try:
            while not self._stop.is_set():
                try:
                    frame = self._handover.get()
                except queue.Empty:
                    continue
                if frame is None:
                    break
                result = self._process(frame, seq)
                seq += 1
                yield result
                if self.options.max_frames and seq >= self.options.max_frames:
                    break
        finally:
            self._finish()
        if self._error is not None:
            raise self._error

    def _process(self, frame: Frame, seq: int) -> StreamResult:
        t_got = time.perf_counter()
        rgb = resize(frame.rgb, self.options.frame_scale) if self._scale_here else frame.rgb
        out = self.segment(rgb)
        t_placed = time.perf_counter()
        pose, fp, tilted, unplaced = self._place(frame, *rgb.shape[:2])
        t_done = time.perf_counter()
        stages = {
            "decode": frame.decode_s,
            "queue_wait": t_got - frame.handed_t,
            "preprocess": out.preprocess_s,
            "compute": out.compute_s,
            "postprocess": out.postprocess_s + (t_done - t_placed),  # stitching, and the footprint
        }
        self.counter.processed += 1
        self.counter.sync_corrupt(self.source.corrupt)
        self._latency.append(t_done - frame.capture_t)
        for k, v in stages.items():
            self._stage_samples[k].append(v)
        if frame.pts_s is not None:
            self._first_pts = frame.pts_s if self._first_pts is None else self._first_pts
            self._last_pts = frame.pts_s
        return StreamResult(
            frame.index,
            seq,
            rgb,
            out.labels,
            out.confidence,
            frame.capture_t,
            t_done,
            frame.pts_s,
            frame.name,
            stages,
            self.counter.since_last(),
            out.tiles,
            pose,
            fp,
            tilted,
            unplaced,
        )

    def add_stage(self, name: str, seconds: float) -> None:
        """A stage the caller times itself (the CLI: `write`), reported with the others in the summary."""
        self._stage_samples.setdefault(name, array("d")).append(seconds)

    def stop(self) -> None:
        """End after the frame in flight (safe from a signal handler: it only sets a flag)."""
        self._stop.set()
        stop_watch = getattr(self.source, "stop_requested", None)
        if stop_watch is not None:
            self.source.stop_requested = True

    def _finish(self) -> None:
        if self._t_end is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)  # a live read blocks at most the socket timeout
        self.counter.add("stopped", self._handover.leftover())
        self._t_end = time.perf_counter()
        if self._thread is None or not self._thread.is_alive():
            self.source.close()

    def close(self) -> None:
        self._finish()
        if self._own_backend:
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the summary ------------------------------------------------------------------------------------------

    def summary(self) -> dict:
        from .stream_report import build_summary

        return build_summary(self)


def stream(
    bundle: Bundle | str | os.PathLike,
    source: FrameSource | str,
    *,
    backend: Backend | str = "auto",
    precision: str = "auto",
    watch: bool = False,
    warmup: int = 1,
    **options,
) -> FrameStream:
    """`for r in stream(bundle, source, drop="latest", stride=2, realtime=True, ...)`: see the module docstring
    (keyword options are StreamOptions' fields)."""
    return FrameStream(
        bundle, source, StreamOptions(**options), backend=backend, precision=precision, watch=watch, warmup=warmup
    )
