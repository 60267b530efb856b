"""--telemetry: DJI SRT and CSV read and interpolated, nadir footprints checked against hand-computed corners,
off-nadir frames flagged and not placed, footprints.gpkg, and bad telemetry reported before the model loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fakes.runtime import FakeBackend, make_bundle
from stream_flight import write_flight

from co2s.bundle import BatchSpec
from co2s.errors import Co2SInputError
from co2s.runtime import stream
from co2s.runtime.footprint import footprint, utm_epsg
from co2s.runtime.telemetry import Pose, read_telemetry

pytest.importorskip("av", reason="the streaming tests need PyAV (pip install 'co2s[video]')")
pyproj = pytest.importorskip("pyproj", reason="footprints need pyproj (pip install 'co2s[geo]')")
LAT, LON = 22.5, 113.9


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"), tile=32)


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> Path:
    return write_flight(tmp_path_factory.mktemp("flight") / "DJI_0001.mp4", n=24)  # 0.8 s at 30 fps


def srt(path: Path, n: int = 24, fps: int = 30, pitch=lambda i: -90.0, lat_step: float = 1e-5) -> Path:
    """A DJI-style sidecar (Mini 3 / Air 2S layout): one block per frame, the drone flying north."""
    blocks = []
    for i in range(n):
        t0, t1 = i / fps, (i + 1) / fps

        def ts(t):
            return f"00:00:{int(t):02d},{round((t % 1) * 1000):03d}"

        blocks.append(
            f'{i + 1}\n{ts(t0)} --> {ts(t1)}\n<font size="28">FrameCnt: {i + 1}, DiffTime: 33ms\n'
            f"[iso: 100] [shutter: 1/1000.0] [fnum: 1.7] [ev: 0] [focal_len: 24.00] "
            f"[latitude: {LAT + i * lat_step:.6f}] [longitude: {LON:.6f}] [rel_alt: 100.000 abs_alt: 152.300] "
            f"[gb_yaw: 0.0 gb_pitch: {pitch(i):.1f} gb_roll: 0.0] </font>\n"
        )
    path.write_text("\n".join(blocks))
    return path


def test_nadir_footprint_corners_by_hand():
    """64x48 frame, 100 m up, 90 degree HFOV: 200 m x 150 m on the ground, 3.125 m per pixel."""
    to_utm = pyproj.Transformer.from_crs(4326, 32649, always_xy=True)
    cx, cy = to_utm.transform(LON, LAT)
    assert utm_epsg(LAT, LON) == 32649 and utm_epsg(-33.9, 18.4) == 32734
    fp = footprint(Pose(0, LAT, LON, 100.0, yaw=0.0), 48, 64, 90.0)
    assert fp.epsg == 32649 and fp.gsd_m == pytest.approx(3.125)
    want = [(cx - 100, cy + 75), (cx + 100, cy + 75), (cx + 100, cy - 75), (cx - 100, cy - 75)]
    for got, exp in zip(fp.corners, want):
        assert got == pytest.approx(exp, abs=1e-6)
    # top of the image facing east: its top-left corner is north-east of the centre
    fp = footprint(Pose(0, LAT, LON, 100.0, yaw=90.0), 48, 64, 90.0)
    want = [(cx + 75, cy + 100), (cx + 75, cy - 100), (cx - 75, cy - 100), (cx - 75, cy + 100)]
    for got, exp in zip(fp.corners, want):
        assert got == pytest.approx(exp, abs=1e-6)
    # any heading: the affine maps the image centre to the drone, the top edge runs at bearing yaw + 90
    fp = footprint(Pose(0, LAT, LON, 100.0, yaw=30.0), 48, 64, 90.0)
    a, b, c, d, e, f = fp.transform
    assert (a * 32 + b * 24 + c, d * 32 + e * 24 + f) == pytest.approx((cx, cy), abs=1e-6)
    (x0, y0), (x1, y1) = fp.corners[:2]
    assert math.degrees(math.atan2(x1 - x0, y1 - y0)) == pytest.approx(120.0)
    assert all(math.dist(p, (cx, cy)) == pytest.approx(125.0) for p in fp.corners)


def test_srt_and_csv_are_read_and_interpolated(tmp_path):
    track = read_telemetry(srt(tmp_path / "f.SRT"))
    assert track.span == (0.0, pytest.approx(23 / 30, abs=1e-3))
    p = track.at(0.5 / 30)  # half-way between the first two blocks
    assert p.lat == pytest.approx(LAT + 0.5e-5) and p.alt_agl == 100.0 and p.pitch == -90.0
    csv = tmp_path / "t.csv"
    csv.write_text("time,lat,lon,alt_agl,yaw,pitch\n0,22.5,113.9,100,350,-90\n1,22.5001,113.9,110,10,-90\n")
    p = read_telemetry(csv).at(0.5)
    assert p.yaw == pytest.approx(0.0) and p.alt_agl == pytest.approx(105.0)  # yaw the short way round 0


def test_every_frame_gets_a_pose_and_footprint_and_tilted_frames_are_flagged(bundle, flight, tmp_path):
    sidecar = srt(tmp_path / "f.srt", pitch=lambda i: -45.0 if 10 <= i < 14 else -90.0)
    be = FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)
    results = list(stream(bundle, str(flight), backend=be, telemetry=sidecar, camera_hfov=90.0))
    assert len(results) == 24
    for r in results:
        assert r.pose.lat == pytest.approx(LAT + r.index * 1e-5, abs=2e-7)  # SRT times are whole ms
        assert r.off_nadir == (10 <= r.index < 14) and (r.footprint is None) == r.off_nadir
        rec = r.record()
        assert rec["off_nadir"] == r.off_nadir and rec["pose"]["alt_agl"] == 100.0
    north = results[3].footprint.corners[0][1] - results[0].footprint.corners[0][1]  # 0.1 s: on an SRT block
    assert north == pytest.approx(3e-5 * 110_770, rel=0.005)  # 1e-5 degree of latitude ~ 1.1 m at 22.5 N


def test_cli_writes_footprints_gpkg(bundle, flight, tmp_path, capsys):
    import pyogrio

    from co2s.cli import stream_main

    out = tmp_path / "out"
    sidecar = srt(tmp_path / "f.srt", pitch=lambda i: -45.0 if i == 5 else -90.0)
    with pytest.raises(SystemExit) as e:
        stream_main([str(bundle), str(flight), "--out", str(out), "--telemetry", str(sidecar),
                     "--camera-hfov", "90", "-q"])  # fmt: skip
    assert e.value.code == 0, capsys.readouterr().err
    info = pyogrio.read_info(out / "footprints.gpkg")
    assert info["features"] == 23 and info["crs"] == "EPSG:32649"  # frame 5 looked sideways: not placed
    assert {"frame", "time_s", "alt_agl", "mean_confidence", "frac_c0"} <= set(info["fields"])
    s = json.loads((out / "summary.json").read_text())
    assert s["footprints"] == {"placed": 23, "epsg": 32649, "unplaced": {"off_nadir": 1}}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: t / "x.srt", "no such file"),
        (lambda t: written(t / "x.srt", "1\n00:00:00,000 --> 00:00:00,033\n[iso: 100]\n"), "line 1: no lat, lon"),
        (lambda t: written(t / "x.csv", "time,lat,lon,alt_agl\n0.5,22.5,113.9,100\n0.2,22.5,113.9,100\n"),
         "times out of order"),
        (lambda t: srt(t / "x.srt", n=5), r"covers 0.00-0.13 s, the video runs 0.00-0.77 s"),
        (lambda t: written(t / "x.gpx", "<gpx/>"), "expected a DJI .SRT sidecar or a .csv"),
    ],
)  # fmt: skip
def test_bad_telemetry_is_reported_before_the_backend_opens(bundle, flight, tmp_path, make, message, monkeypatch):
    def no_backend(*a, **k):
        raise AssertionError("the backend was opened for bad telemetry")

    monkeypatch.setattr("co2s.runtime.streaming.open_backend", no_backend)
    with pytest.raises(Co2SInputError, match=message):
        stream(bundle, str(flight), telemetry=make(tmp_path), camera_hfov=84.0)


def test_telemetry_needs_the_field_of_view(bundle, flight, tmp_path):
    with pytest.raises(Co2SInputError, match="geotagging needs --camera-hfov DEG"):
        stream(bundle, str(flight), telemetry=srt(tmp_path / "f.srt"))


def written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
