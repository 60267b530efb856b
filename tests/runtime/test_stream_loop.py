"""The streaming loop (co2s.runtime.stream): drop accounting checked exactly against a backend slower than the
frame interval, every source kind that can be made here, and per-frame results equal to predict_array's."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes.runtime import FakeBackend, make_bundle
from PIL import Image
from stream_flight import FPS, SleepyBackend, flight_frames, write_flight

from co2s.bundle import BatchSpec
from co2s.errors import Co2SInputError
from co2s.runtime import predict_array, stream
from co2s.runtime.io import Address, Frame, FrameSource

pytest.importorskip("av", reason="the streaming tests need PyAV (pip install 'co2s[video]')")
INTERVAL = 1.0 / FPS
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"), tile=32)


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> Path:
    return write_flight(tmp_path_factory.mktemp("flight") / "flight.mp4", n=24)


def run_all(fs) -> tuple[list, dict]:
    results = list(fs)
    return results, fs.summary()


def accounted(summary: dict) -> int:
    d = summary["frames"]["dropped"]
    return summary["frames"]["processed"] + d["behind"] + d["stride"] + d["stopped"]


def test_realtime_file_with_a_slow_model_drops_latest_and_counts_every_frame(bundle, flight):
    """--realtime at 30 fps, a model taking 3 frame intervals per frame, --drop latest: the loop skips ahead,
    and processed + dropped(behind) + dropped(stride) is exactly the number of frames decoded."""
    be = SleepyBackend(32, 3 * INTERVAL)
    results, s = run_all(stream(bundle, str(flight), backend=be, realtime=True, drop="latest"))
    f = s["frames"]
    assert f["decoded"] == 24
    assert accounted(s) == 24
    assert f["dropped"]["stopped"] == 0 and f["dropped"]["stride"] == 0
    assert f["dropped"]["behind"] > 0 and f["processed"] <= 24 // 2  # it cannot keep up with a 3x slower model
    assert sum(r.dropped["behind"] for r in results) == f["dropped"]["behind"]  # per-result drops add up
    assert [r.seq for r in results] == list(range(len(results)))
    idx = [r.index for r in results]
    assert idx == sorted(set(idx)) and idx[-1] == 23  # newest frames, in order; the last frame is never lost
    assert s["latency_ms"]["count"] == f["processed"]
    assert s["policy"]["drop"] == "latest" and s["source_fps"] == pytest.approx(FPS)


def test_drop_none_processes_every_frame_and_latency_grows(bundle, flight):
    be = SleepyBackend(32, 3 * INTERVAL)
    results, s = run_all(stream(bundle, str(flight), backend=be, realtime=True, drop="none"))
    assert s["frames"]["processed"] == s["frames"]["decoded"] == 24
    assert s["frames"]["dropped"] == {"behind": 0, "stride": 0, "corrupt": 0, "stopped": 0}
    assert [r.index for r in results] == list(range(24))
    lat = [r.latency_s for r in results]
    # 24 frames arrive over 0.8 s and take >= 2.4 s to process: the last waits about 1.6 s longer than the first
    # (a loaded machine only makes it more); under drop latest it would stay about one model call
    assert lat[-1] - lat[0] >= 1.0, lat
    assert all(b >= a - 0.05 for a, b in zip(lat, lat[1:])), lat  # it never catches up


def test_stride_is_counted_exactly(bundle, flight):
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    results, s = run_all(stream(bundle, str(flight), backend=be, stride=3))
    assert [r.index for r in results] == list(range(0, 24, 3))
    assert s["frames"]["dropped"]["stride"] == 16 and s["frames"]["processed"] == 8
    assert s["policy"]["drop"] == "none"  # files default to every frame


def test_stride_with_drop_latest_adds_up(bundle, flight):
    be = SleepyBackend(32, 3 * INTERVAL)
    _, s = run_all(stream(bundle, str(flight), backend=be, realtime=True, drop="latest", stride=2))
    assert s["frames"]["dropped"]["stride"] == 12
    assert accounted(s) == s["frames"]["decoded"] == 24


def test_each_result_equals_predict_array_on_the_decoded_frame(bundle, flight):
    """The loop tiles and stitches like the rest of the runtime (same grid, same stitcher)."""
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    for r in stream(bundle, str(flight), backend=be, max_frames=3):
        ref = predict_array(be, r.rgb)
        np.testing.assert_array_equal(r.labels, ref["labels"])
        np.testing.assert_allclose(r.confidence, ref["confidence"])
        assert r.tiles == 6 and r.labels.shape == (48, 64)
        assert set(r.stages) == {"decode", "queue_wait", "preprocess", "compute", "postprocess"}


def test_frame_scale_halves_the_frame_before_tiling(bundle, flight):
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    r = next(iter(stream(bundle, str(flight), backend=be, frame_scale=0.5)))
    assert r.labels.shape == (24, 32) and r.tiles == 1


def test_max_frames_counts_the_queued_frame_as_stopped(bundle, flight):
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    fs = stream(bundle, str(flight), backend=be, max_frames=5)
    results, s = run_all(fs)
    assert len(results) == 5
    assert s["frames"]["decoded"] == accounted(s)  # decoded but never processed: "stopped"


def test_image_sequence_folder_and_glob_in_name_order(bundle, tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    frames = list(flight_frames(4))
    for i, rgb in enumerate(frames):
        Image.fromarray(rgb).save(folder / f"img_{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    results, s = run_all(stream(bundle, str(folder), backend=be, fps=2.0))
    assert [r.name for r in results] == [f"img_{i:03d}.png" for i in range(4)]
    assert [r.pts_s for r in results] == [0.0, 0.5, 1.0, 1.5]
    np.testing.assert_array_equal(results[2].rgb, frames[2])  # lossless stills come through unchanged
    assert s["source_kind"] == "images" and s["source_fps"] == 2.0 and s["frames"]["processed"] == 4
    results = list(stream(bundle, str(folder / "img_00[13].png"), backend=be))
    assert [r.name for r in results] == ["img_001.png", "img_003.png"]


def test_watch_never_reads_a_half_written_still(bundle, tmp_path):
    """A still written in chunks (pauses shorter than the settle time) and one written under a temporary name
    then renamed are each read once, whole; the file already there at the start is not reprocessed."""
    folder = tmp_path / "camera"
    folder.mkdir()
    rgb = list(flight_frames(3))
    Image.fromarray(rgb[0]).save(folder / "DJI_0000.png")  # from before the run: skipped
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb[1]).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()

    def camera():
        time.sleep(0.5)
        with open(folder / "DJI_0001.png", "wb") as f:
            for k in range(0, len(data), len(data) // 6 + 1):
                f.write(data[k : k + len(data) // 6 + 1])
                f.flush()
                time.sleep(0.1)
        tmp = folder / "DJI_0002.png.tmp"
        Image.fromarray(rgb[2]).save(tmp, format="PNG")
        time.sleep(0.5)
        tmp.rename(folder / "DJI_0002.png")

    writer = threading.Thread(target=camera)
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    fs = stream(bundle, str(folder), backend=be, watch=True, idle_exit_s=2.0)
    writer.start()
    results, s = run_all(fs)
    writer.join()
    assert [r.name for r in results] == ["DJI_0001.png", "DJI_0002.png"]
    np.testing.assert_array_equal(results[0].rgb, rgb[1])
    np.testing.assert_array_equal(results[1].rgb, rgb[2])
    assert s["frames"]["dropped"]["corrupt"] == 0 and s["policy"]["drop"] == "none"


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_udp_mpegts_stream_served_on_localhost(bundle):
    """A live MPEG-TS/UDP feed from a subprocess (PyAV muxing to udp://127.0.0.1): drop latest by default."""
    port = _free_udp_port()
    env = {"PYTHONPATH": f"{HERE}{':'}{HERE.parent}", "PATH": "/usr/bin:/bin"}
    sender = subprocess.Popen([sys.executable, str(HERE / "udp_sender.py"), str(port), "4"], env=env)
    try:
        be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
        fs = stream(bundle, f"udp://127.0.0.1:{port}", backend=be, max_frames=10)
        results, s = run_all(fs)
    finally:
        sender.kill()
        sender.wait()
    assert len(results) == 10 and s["live"] and s["policy"]["drop"] == "latest"
    assert s["source_kind"] == "stream" and results[0].labels.shape == (48, 64)
    assert accounted(s) == s["frames"]["decoded"]


class EndingLiveSource(FrameSource):
    """A live source whose stream ends after 3 frames each time it is opened."""

    def __init__(self):
        self.address = Address("stream", "udp://fake", live=True)
        self.fps = 30.0
        self.opens = 1
        self._i = 0

    def frames(self):
        for _ in range(3):
            t = time.perf_counter()
            yield Frame(self._i, np.zeros((32, 32, 3), np.uint8), t, 0.0)
            self._i += 1

    def reopen(self):
        self.opens += 1


def test_a_live_source_that_ends_is_reopened_with_backoff_and_counted(bundle):
    src = EndingLiveSource()
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    _, s = run_all(stream(bundle, src, backend=be, reconnect=2, drop="none"))
    assert src.opens == 3 and s["reconnects"] == 2
    assert s["frames"]["decoded"] == s["frames"]["processed"] == 9


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: written(t / "clip.mp4", b"hello"), "not a video PyAV can read"),
        (lambda t: written(t / "clip.mp4", b""), r"empty file \(0 bytes\)"),
        (lambda t: t / "gone.mp4", "no such file, folder or device"),
        (lambda t: "foo://camera", "unknown scheme foo://"),
        (lambda t: "/dev/video97", "camera /dev/video97 does not open"),
        (lambda t: "gst:videotestsrc ! appsink", "GStreamer pipelines are read through OpenCV built with GStreamer"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "no images found"),
    ],
)
def test_bad_sources_fail_before_the_backend_opens(bundle, tmp_path, make, message, monkeypatch):
    if "GStreamer" in message:
        try:
            import cv2  # noqa: F401

            pytest.skip("cv2 is installed here: the missing-OpenCV message cannot be shown")
        except ImportError:
            pass

    def no_backend(*a, **k):
        raise AssertionError("the backend was opened for a bad source")

    monkeypatch.setattr("co2s.runtime.streaming.open_backend", no_backend)
    with pytest.raises(Co2SInputError, match=message):
        stream(bundle, str(make(tmp_path)))


def test_truncated_and_zero_frame_videos_are_reported(bundle, tmp_path):
    import av

    full = write_flight(tmp_path / "full.mp4", n=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the MP4 index (moov) is at the end: gone
    with pytest.raises(Co2SInputError, match="truncated"):
        stream(bundle, str(cut))
    zero = tmp_path / "zero.mkv"
    with av.open(str(zero), "w", format="matroska") as c:
        st = c.add_stream("mpeg4", rate=30)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(Co2SInputError, match="no decodable video frames"):
        stream(bundle, str(zero))


def test_corrupt_packets_are_skipped_and_counted(bundle, tmp_path):
    """An MPEG-TS recording with garbled payloads in its middle third (TS headers intact, so demuxing goes on):
    the run completes, every decoded frame is processed, and the frames missing from the timeline (FFmpeg drops
    most damaged frames silently) are counted corrupt: decoded + corrupt is the recording's 60 frames, give or take
    one where a garbled timestamp leaves it ambiguous which frame was the odd one out."""
    ts = write_flight(tmp_path / "f.ts", n=60, fmt="mpegts")
    data = bytearray(ts.read_bytes())
    rng = np.random.default_rng(0)
    packets = len(data) // 188
    for k in range(packets // 3, 2 * packets // 3, 3):
        data[k * 188 + 8 : (k + 1) * 188] = rng.integers(0, 256, 180, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(data))
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    results, s = run_all(stream(bundle, str(bad), backend=be))
    f = s["frames"]
    assert f["dropped"]["corrupt"] >= 1
    assert f["processed"] == f["decoded"] == len(results) < 60
    assert abs(f["decoded"] + f["dropped"]["corrupt"] - 60) <= 1
    assert results[-1].index == f["decoded"] - 1  # decoding went on past the damage
    assert sum(r.dropped["corrupt"] for r in results) == f["dropped"]["corrupt"]  # reported with the results
