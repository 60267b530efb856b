"""co2s-stream as a user runs it: outputs in --out, SIGINT/SIGTERM and kill -9 on real subprocesses, usage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.runtime import make_bundle
from stream_flight import count_frames, write_flight

pytest.importorskip("av", reason="the streaming tests need PyAV (pip install 'co2s[video]')")
LAUNCH = "import sys; from co2s.cli import stream_main; stream_main(sys.argv[1:])"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"), tile=32)


@pytest.fixture(scope="module")
def long_flight(tmp_path_factory) -> Path:
    return write_flight(tmp_path_factory.mktemp("flight") / "flight.mp4", n=150)  # 5 s at 30 fps


def cli(argv, capsys) -> tuple[int, str]:
    from co2s.cli import stream_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        stream_main([str(a) for a in argv])
    return int(e.value.code or 0), capsys.readouterr().err


def lines_of(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "frames.jsonl ends in a partial line"
    return [json.loads(line) for line in text.splitlines()]


def test_outputs_of_a_file_run(bundle, tmp_path, capsys):
    video = write_flight(tmp_path / "f.mp4", n=12)
    out = tmp_path / "out"
    code, err = cli([bundle, video, "--out", out, "--save-every", "5", "-q"], capsys)
    assert code == 0, err
    recs = lines_of(out / "frames.jsonl")
    assert [r["frame"] for r in recs] == list(range(12))
    assert set(recs[0]["stages_ms"]) == {"decode", "queue_wait", "preprocess", "compute", "postprocess", "write"}
    assert recs[0]["size"] == [48, 64] and abs(sum(recs[0]["class_fractions"].values()) - 1) < 1e-3
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"]["processed"] == 12 and s["interrupted"] is False
    assert {"p50_ms", "p90_ms", "p99_ms", "max_ms"} <= set(s["latency_ms"]) and s["device"]["cpu"]
    assert "| all processed frames (12) |" in (out / "summary.md").read_text()
    assert count_frames(out / "overlay.mp4") == 12
    saved = sorted(p.name for p in (out / "frames").iterdir())
    assert saved == [f"{i:06d}.{k}.png" for i in (0, 5, 10) for k in ("confidence", "labels")]
    assert "done: 12 of 12 frames processed (dropped: none)" in err


def _start(bundle, video, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(bundle), str(video), "--out", str(out), "--realtime", "-q", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lines(proc: subprocess.Popen, jsonl: Path, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if jsonl.exists() and jsonl.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"co2s-stream ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} lines in {jsonl} after {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_frame_closes_the_video_and_writes_the_summary(bundle, long_flight, tmp_path, sig):
    out = tmp_path / "out"
    proc = _start(bundle, long_flight, out)
    _wait_for_lines(proc, out / "frames.jsonl", 10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for SIGTERM (what supervisors expect)
    assert f"interrupted ({sig.name})" in err
    recs = lines_of(out / "frames.jsonl")
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] is True and s["frames"]["processed"] == len(recs) < 150
    assert count_frames(out / "overlay.mp4") == len(recs)  # closed properly: every written frame plays


def test_kill_9_leaves_whole_lines_and_a_playable_overlay(bundle, long_flight, tmp_path):
    out = tmp_path / "out"
    proc = _start(bundle, long_flight, out)
    _wait_for_lines(proc, out / "frames.jsonl", 45)  # past the first 1-second fragment of overlay.mp4
    proc.kill()
    proc.wait(timeout=30)
    recs = lines_of(out / "frames.jsonl")  # every line whole
    assert len(recs) >= 45 and [r["seq"] for r in recs] == list(range(len(recs)))
    playable = count_frames(out / "overlay.mp4")
    assert 30 <= playable <= len(recs)  # up to its last complete fragment
    assert not (out / "summary.json").exists()


def test_watch_needs_a_folder_and_one_source(bundle, tmp_path, capsys):
    code, err = cli([bundle, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "give a SOURCE or --watch DIR" in err
    code, err = cli([bundle, "--watch", tmp_path / "nowhere", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "not a folder" in err and not (tmp_path / "o").exists()
