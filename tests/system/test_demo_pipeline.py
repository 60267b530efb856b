"""The main job end to end at a small size: train -> export -> infer -> bench -> flight -> report, through the real
CLIs; and the flight step alone (a fake bundle) with the [video] or [geo] extra missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from fakes.runtime import make_bundle
from PIL import Image

FLIGHT_OUTPUTS = ("flight.mp4", "flight.csv", "flight/summary.json", "flight/frames.jsonl", "flight/overlay.mp4")


def _env(**extra: str) -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def test_demo_chain_produces_every_artefact(tmp_path):
    out = tmp_path / "demo"
    env = _env(
        ITERS="20",
        SCENE="384x512",
        BENCH_ITERS="2",
        # 20 iterations leave near-uniform probabilities, where INT8 label flips are noise; the parity gate
        # itself is tested in test_export_bundle.py.
        EXPORT_EXTRA="--allow-degraded",
    )
    r = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/demo.sh"), str(out)], env=env, capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in (
        "run/best.pt",
        "bundle/co2s.json",
        "bundle/model.int8.onnx",
        "scene.labels.png",
        "scene.overlay.png",
        "scene.confidence.png",
        "bench.json",
        "training_curve.png",
        *FLIGHT_OUTPUTS,
        "flight/footprints.gpkg",
        "flight_strip.png",
        "flight_footprints.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    labels = np.asarray(Image.open(out / "scene.labels.png"))
    assert labels.shape == (384, 512) and labels.max() < 5
    manifest = json.loads((out / "bundle/co2s.json").read_text())
    assert manifest["parity"]["fp32"]["passed"]
    # the flight: 10 s at 10 fps, every decoded frame processed or dropped for a stated reason
    summary = json.loads((out / "flight/summary.json").read_text())
    f = summary["frames"]
    assert f["decoded"] == 100 and f["processed"] >= 1
    assert f["processed"] + sum(f["dropped"].values()) == f["decoded"]
    assert summary["policy"]["realtime"] and summary["policy"]["drop"] == "latest"
    lines = (out / "flight/frames.jsonl").read_text().splitlines()
    assert len(lines) == f["processed"] and all(json.loads(x)["footprint"] for x in lines)
    assert Image.open(out / "flight_strip.png").size == (5 * 320 + 4 * 4, 240)
    report = (out / "report.md").read_text()
    for needle in (
        "mIoU fused",
        "pixel agreement",
        "p50",
        "Machine:",
        "## Onboard flight",
        "![overlay frames](flight_strip.png)",
        "| capture → result latency |",
        "| compute |",
        f"{f['decoded']} decoded, {f['processed']} processed",
        "| behind |",
        "![footprints](flight_footprints.png)",
        f"{f['processed']} polygons",
    ):
        assert needle in report, needle


def _shadow(tmp_path: Path, module: str) -> str:
    """A folder for PYTHONPATH in which `import module` fails as it does when the package is not installed."""
    folder = tmp_path / f"without_{module}"
    folder.mkdir()
    (folder / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
    )
    return str(folder)


def _flight_step(out: Path, bundle: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = _env(FLIGHT_SECONDS="1", FLIGHT_FPS="10", FLIGHT_SIZE="48x64")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/demo_flight.sh"), str(out), str(bundle)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _flight_section(out: Path, pythonpath: str | None = None) -> str:
    """demo_report.py's flight section, in a process that sees the same packages as the flight step did."""
    paths = [p for p in (pythonpath, str(REPO_ROOT / "scripts")) if p]
    r = subprocess.run(
        [sys.executable, "-c", f"import demo_report, pathlib; print(demo_report._flight(pathlib.Path({str(out)!r})))"],
        env=_env(PYTHONPATH=os.pathsep.join(paths)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_demo_flight_without_pyav_is_skipped_in_one_line(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    no_av = _shadow(tmp_path, "av")
    r = _flight_step(out, make_bundle(tmp_path / "bundle", tile=32), no_av)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["flight: skipped: PyAV is not installed (pip install 'co2s[video]')"]
    assert r.stderr == "" and list(out.iterdir()) == []
    assert "Skipped: PyAV is not installed (`pip install 'co2s[video]'`)." in _flight_section(out, no_av)


def test_demo_flight_without_the_geo_extra_has_no_footprint_map(tmp_path):
    pytest.importorskip("av", reason="the flight needs PyAV (pip install 'co2s[video]')")
    out = tmp_path / "demo"
    no_pyogrio = _shadow(tmp_path, "pyogrio")
    r = _flight_step(out, make_bundle(tmp_path / "bundle", tile=32), no_pyogrio)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "flown without --telemetry (no footprints): the geo extra is not installed" in r.stdout
    for name in FLIGHT_OUTPUTS:
        assert (out / name).is_file(), name
    assert not (out / "flight/footprints.gpkg").exists()
    summary = json.loads((out / "flight/summary.json").read_text())
    assert summary["frames"]["decoded"] == 10
    section = _flight_section(out, no_pyogrio)
    assert "| capture → result latency |" in section and "| behind |" in section
    assert "Skipped: the geo extra is not installed (`pip install 'co2s[geo]'`)" in section
    assert (out / "flight_strip.png").is_file() and not (out / "flight_footprints.png").exists()
