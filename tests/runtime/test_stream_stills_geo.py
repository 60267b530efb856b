"""Stills placed by their own metadata: EXIF GPS (Pillow) and the DJI XMP pose, the field of view from the EXIF
focal length, footprints against hand-computed corners, stills without GPS or with a damaged EXIF block, and
--save-every writing GeoTIFFs whose transform and CRS are the frame's footprint."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from fakes.runtime import FakeBackend, make_bundle
from PIL import ExifTags, Image

from co2s.bundle import BatchSpec
from co2s.errors import Co2SInputError
from co2s.runtime import stream
from co2s.runtime.photo_pose import read_photo_pose

pyproj = pytest.importorskip("pyproj", reason="footprints need pyproj (pip install 'co2s[geo]')")
LAT, LON = 22.5, 113.9  # 22 deg 30' N, 113 deg 54' E: UTM zone 49N
W, H = 64, 48


def dji_xmp(alt=100.0, yaw=0.0, pitch=-90.0, roll=0.0, flight_yaw=12.3, elements=False) -> bytes:
    """The XMP packet a DJI camera writes (attribute form; some tools rewrite it as elements)."""
    fields = {"RelativeAltitude": f"{alt:+.2f}", "AbsoluteAltitude": "+152.30", "FlightYawDegree": f"{flight_yaw:+.1f}"}
    if yaw is not None:
        fields |= {"GimbalYawDegree": f"{yaw:+.1f}", "GimbalPitchDegree": f"{pitch:+.1f}", "GimbalRollDegree": f"{roll:+.1f}"}  # fmt: skip
    if elements:
        body = "".join(f"<drone-dji:{k}>{v}</drone-dji:{k}>" for k, v in fields.items())
        desc = f'<rdf:Description rdf:about="" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/">{body}</rdf:Description>'
    else:
        attrs = " ".join(f'drone-dji:{k}="{v}"' for k, v in fields.items())
        desc = f'<rdf:Description rdf:about="" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" {attrs}/>'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">{desc}</rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    ).encode()


def dms(deg: float) -> tuple[float, float, float]:
    d = int(deg)
    m = int((deg - d) * 60)
    return (float(d), float(m), round((deg - d - m / 60) * 3600, 4))


def exif_block(lat=LAT, lon=LON, f35=18, focal=None) -> Image.Exif:
    """EXIF with GPS (degrees/minutes/seconds, N/S/E/W) and a focal length, as Pillow writes it."""
    exif = Image.Exif()
    if lat is not None:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        g = ExifTags.GPS
        gps[g.GPSLatitudeRef], gps[g.GPSLatitude] = ("N" if lat >= 0 else "S"), dms(abs(lat))
        gps[g.GPSLongitudeRef], gps[g.GPSLongitude] = ("E" if lon >= 0 else "W"), dms(abs(lon))
        gps[g.GPSAltitudeRef], gps[g.GPSAltitude] = b"\x00", 152.3  # above sea level: not the footprint's height
    ex = exif.get_ifd(ExifTags.IFD.Exif)
    if f35:
        ex[ExifTags.Base.FocalLengthIn35mmFilm] = f35
    if focal:
        f_mm, sensor_w_mm, width_px = focal
        ex[ExifTags.Base.FocalLength] = f_mm
        ex[ExifTags.Base.FocalPlaneXResolution] = width_px / sensor_w_mm
        ex[ExifTags.Base.FocalPlaneResolutionUnit] = 4  # mm
        ex[ExifTags.Base.ExifImageWidth] = width_px
    return exif


def still(path: Path, exif=None, xmp: bytes | None = None, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    kw = {}
    if exif is not None:
        kw["exif"] = exif
    if xmp is not None:
        kw["xmp"] = xmp  # Pillow >= 11 writes it as the JPEG's XMP APP1 segment
    Image.fromarray(rgb).save(path, format="JPEG", quality=95, **kw)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"), tile=32)


def backend():
    return FakeBackend(32, batch=BatchSpec(1, 4, 16), probs=False)


def test_pose_from_exif_gps_and_dji_xmp(tmp_path):
    p = read_photo_pose(still(tmp_path / "a.jpg", exif_block(), dji_xmp(alt=98.5, yaw=-90.0, pitch=-89.9)), t=2.0)
    assert p.missing is None
    assert p.pose.lat == pytest.approx(LAT, abs=1e-7) and p.pose.lon == pytest.approx(LON, abs=1e-7)
    assert p.pose.alt_agl == 98.5 and p.pose.t == 2.0  # XMP RelativeAltitude, not GPSAltitude (152.3 m ASL)
    assert p.pose.yaw == 270.0 and p.pose.pitch == -89.9 and p.pose.roll == 0.0  # gimbal yaw -90 -> 270
    # southern/western hemisphere, the XMP as elements, no gimbal: the aircraft's heading, pitch unknown
    p = read_photo_pose(still(tmp_path / "b.jpg", exif_block(-33.9, -18.4), dji_xmp(yaw=None, elements=True)))
    assert (p.pose.lat, p.pose.lon) == (pytest.approx(-33.9, abs=1e-7), pytest.approx(-18.4, abs=1e-7))
    assert p.pose.yaw == 12.3 and p.pose.pitch is None and p.pose.alt_agl == 100.0
    # GPS but no XMP: EXIF's altitude is above sea level, so there is no height for a footprint
    assert read_photo_pose(still(tmp_path / "c.jpg", exif_block())).missing == "no_altitude"


def test_hfov_from_exif(tmp_path):
    # 35 mm equivalent: 2 atan(36 / (2 * 18)) = 90 degrees
    assert read_photo_pose(still(tmp_path / "a.jpg", exif_block(f35=18), dji_xmp())).hfov_deg == pytest.approx(90.0)
    # the physical sensor (a 1" 13.2 mm wide sensor behind 8.8 mm, Phantom 4 Pro) wins over the 35 mm figure
    photo = read_photo_pose(still(tmp_path / "b.jpg", exif_block(f35=50, focal=(8.8, 13.2, 5472)), dji_xmp()))
    assert photo.hfov_deg == pytest.approx(math.degrees(2 * math.atan(13.2 / 17.6)), abs=1e-6)  # 73.74
    assert read_photo_pose(still(tmp_path / "c.jpg", exif_block(f35=None), dji_xmp())).hfov_deg is None


def test_stills_are_placed_by_their_own_pose(bundle, tmp_path):
    """64x48, 100 m up, 90 degree HFOV from EXIF: 200 m x 150 m, corners by hand as for telemetry."""
    d = tmp_path / "stills"
    d.mkdir()
    still(d / "0.jpg", exif_block(), dji_xmp(yaw=0.0))
    still(d / "1.jpg", exif_block(), dji_xmp(yaw=90.0))
    still(d / "2.jpg", exif_block(), dji_xmp(pitch=-45.0))  # looking sideways: flagged, not placed
    still(d / "3.jpg", exif_block(f35=None), dji_xmp())  # no focal length and no --camera-hfov
    r0, r1, r2, r3 = list(stream(bundle, str(d), backend=backend()))
    cx, cy = pyproj.Transformer.from_crs(4326, 32649, always_xy=True).transform(LON, LAT)
    assert r0.footprint.epsg == 32649 and r0.footprint.gsd_m == pytest.approx(3.125)
    want = [(cx - 100, cy + 75), (cx + 100, cy + 75), (cx + 100, cy - 75), (cx - 100, cy - 75)]
    for got, exp in zip(r0.footprint.corners, want):
        assert got == pytest.approx(exp, abs=0.01)  # EXIF stores seconds to 1e-4: ~3 mm
    want = [(cx + 75, cy + 100), (cx + 75, cy - 100), (cx - 75, cy - 100), (cx - 75, cy + 100)]  # top faces east
    for got, exp in zip(r1.footprint.corners, want):
        assert got == pytest.approx(exp, abs=0.01)
    assert r2.off_nadir and r2.footprint is None and r2.record()["unplaced"] == "off_nadir"
    assert r3.pose is not None and r3.footprint is None and r3.unplaced == "no_hfov"
    # --camera-hfov applies to every still, over EXIF
    r = next(iter(stream(bundle, str(d / "3.jpg"), backend=backend(), camera_hfov=60.0)))
    assert r.footprint.gsd_m == pytest.approx(2 * 100 * math.tan(math.radians(30)) / W)


def test_still_without_gps_and_damaged_exif_are_counted_not_errors(bundle, tmp_path, caplog):
    d = tmp_path / "stills"
    d.mkdir()
    still(d / "0.jpg", exif_block(), dji_xmp())
    still(d / "1.jpg", exif_block(lat=None), dji_xmp())  # no GPS IFD
    raw = exif_block().tobytes()
    still(d / "2.jpg", raw[:40], dji_xmp())  # the EXIF block cut short: its IFD entries run past the end
    still(d / "3.jpg", exif_block(lat=None))
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        results = list(stream(bundle, str(d), backend=backend()))
    assert [r.unplaced for r in results] == [None, "no_gps", "bad_exif", "no_gps"]
    assert results[0].footprint is not None and all(r.footprint is None for r in results[1:])
    assert results[1].record()["pose"] is None and results[1].record()["unplaced"] == "no_gps"
    damaged = [m for m in caplog.messages if "damaged EXIF" in m]
    assert len(damaged) == 1 and "2.jpg" in damaged[0]
    assert sum("no GPS position" in m for m in caplog.messages) == 1  # stated once, not per still


def test_camera_hfov_is_for_telemetry_or_stills(bundle, tmp_path):
    from stream_flight import write_flight

    pytest.importorskip("av")
    video = write_flight(tmp_path / "f.mp4", n=2)
    with pytest.raises(Co2SInputError, match="--camera-hfov applies with --telemetry or to stills"):
        stream(bundle, str(video), backend=backend(), camera_hfov=80.0)
    with pytest.raises(Co2SInputError, match=r"--camera-hfov 200.0: expected degrees in \(0, 180\)"):
        stream(bundle, str(still(tmp_path / "a.jpg")), backend=backend(), camera_hfov=200.0)


def test_cli_save_every_writes_geotiffs_matching_the_footprint(bundle, tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    pyogrio = pytest.importorskip("pyogrio")
    from co2s.cli import stream_main

    d = tmp_path / "stills"
    d.mkdir()
    for i in range(3):
        still(d / f"{i}.jpg", exif_block(lat=LAT + i * 1e-3), dji_xmp(yaw=30.0 * i), seed=i)
    still(d / "3.jpg", exif_block(lat=None), dji_xmp(), seed=3)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        stream_main(
            [str(bundle), str(d), "--out", str(out), "--save-every", "1", "--no-overlay", "--backend", "ort-cpu"]
        )
    err = capsys.readouterr().err
    assert e.value.code == 0, err
    assert "--save-every: frame 3 has no ground footprint (no_gps)" in err
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    for rec in records[:3]:
        fp = rec["footprint"]
        with rasterio.open(out / "frames" / f"{rec['frame']:06d}.labels.tif") as ds:
            assert ds.crs.to_epsg() == fp["epsg"] == 32649 and (ds.width, ds.height) == (W, H)
            for (col, row), corner in zip([(0, 0), (W, 0), (W, H), (0, H)], fp["corners"]):
                assert ds.transform @ (col, row) == pytest.approx(tuple(corner), abs=1e-6)
            labels = ds.read(1)
        with rasterio.open(out / "frames" / f"{rec['frame']:06d}.confidence.tif") as ds:
            assert (
                ds.crs.to_epsg() == 32649
                and ds.transform == rasterio.open(out / "frames" / f"{rec['frame']:06d}.labels.tif").transform
            )
        assert labels.shape == (H, W)
    assert (out / "frames" / "000003.labels.png").is_file() and not (out / "frames" / "000003.labels.tif").exists()
    info = pyogrio.read_info(out / "footprints.gpkg")
    assert info["features"] == 3 and info["crs"] == "EPSG:32649"
    s = json.loads((out / "summary.json").read_text())
    assert s["footprints"] == {"placed": 3, "epsg": 32649, "unplaced": {"no_gps": 1}}


def test_watched_folder_stills_are_placed(bundle, tmp_path):
    import threading
    import time

    folder = tmp_path / "camera"
    folder.mkdir()

    def camera():
        time.sleep(0.3)
        # written under a temporary name, renamed when complete
        still(folder / "DJI_0001.jpg.tmp", exif_block(), dji_xmp(yaw=0.0)).rename(folder / "DJI_0001.jpg")

    writer = threading.Thread(target=camera)
    fs = stream(bundle, str(folder), backend=backend(), watch=True, idle_exit_s=1.5)
    writer.start()
    with fs:
        results = list(fs)
    writer.join()
    assert [r.name for r in results] == ["DJI_0001.jpg"]
    cx, cy = pyproj.Transformer.from_crs(4326, 32649, always_xy=True).transform(LON, LAT)
    assert results[0].footprint.corners[0] == pytest.approx((cx - 100, cy + 75), abs=0.01)
