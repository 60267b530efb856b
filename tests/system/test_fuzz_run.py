"""benchmarks/fuzz/fuzz_runtime.py: the seed corpus and the stored crash inputs replay cleanly through the fuzz
targets (no atheris needed), and a short bounded atheris run of each target finds no crash (skipped without atheris).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, REPO_ROOT

FUZZ = REPO_ROOT / "benchmarks" / "fuzz"
REGRESSIONS = DATA / "fuzz_regressions"
SUMMARY = re.compile(r"fuzz (\w+): (\d+) s, (\d+) executions \((\d+)/s\), coverage (\d+) edges.*?(\d+) crash\(es\)")


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_runtime", FUZZ / "fuzz_runtime.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod._quiet()
    return mod


fuzz_runtime = _load()
has_atheris = importlib.util.find_spec("atheris") is not None


def _inputs(target: str) -> list[Path]:
    """Seed corpus plus the stored crash inputs (.json ones are manifests, the rest images)."""
    stored = [p for p in sorted(REGRESSIONS.iterdir()) if (p.suffix == ".json") == (target == "manifest")]
    return sorted((FUZZ / "corpus" / target).iterdir()) + stored


@pytest.mark.parametrize("target", ["image", "manifest"])
def test_corpus_and_regressions_replay_without_crash(target):
    files = _inputs(target)
    assert len(files) >= 5, files
    for f in files:
        fuzz_runtime.CHECKS[target](f.read_bytes())  # raises on anything but Co2SInputError


def test_seed_corpus_is_small_and_covers_every_reader():
    files = [p for p in (FUZZ / "corpus").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 200_000
    names = {p.name for p in files}
    for want in ("rgb.png", "rgb.jpg", "rgb.tif", "geo_rgb_tiled.tif", "valid.json", "engine.json"):
        assert want in names, want


def test_summary_parser_reads_libfuzzer_final_stats():
    log = (
        "#1024\tpulse  cov: 10 ft: 20 corp: 3/10b exec/s: 0 rss: 60Mb\n"
        "#5000\tDONE   cov: 181 ft: 462 corp: 67/40Kb lim: 1500 exec/s: 2881 rss: 66Mb\n"
        "Done 5000 runs in 2 second(s)\nstat::number_of_executed_units: 5000\nstat::new_units_added:          12\n"
        "stat::peak_rss_mb:              66\n"
    )
    assert fuzz_runtime.summarize(log) == {
        "execs": 5000,
        "cov": 181,
        "ft": 462,
        "corpus": 67,
        "new_units": 12,
        "peak_rss_mb": 66,
    }


def _run(target: str, tmp_path: Path, seconds: int) -> subprocess.CompletedProcess:
    # a subprocess: libFuzzer owns the process (signals, exit) and must not run inside pytest
    cmd = [
        sys.executable,
        str(FUZZ / "fuzz_runtime.py"),
        target,
        "--seconds",
        str(seconds),
        "--timeout",
        "20",
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--work",
        str(tmp_path / "work"),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 180)


@pytest.mark.skipif(not has_atheris, reason="atheris is not installed (pip install atheris, part of the [dev] extra)")
@pytest.mark.parametrize("target", ["image", "manifest"])
def test_bounded_fuzz_run_finds_no_crash(target, tmp_path):
    r = _run(target, tmp_path, 10)
    assert r.returncode == 0, r.stdout + r.stderr[-5000:]
    m = SUMMARY.search(r.stdout)
    assert m and m.group(1) == target, r.stdout
    execs, cov, crashes = int(m.group(3)), int(m.group(5)), int(m.group(6))
    assert execs > 10 and cov > 0 and crashes == 0, r.stdout
    assert not any((tmp_path / "artifacts").iterdir())
    assert any((tmp_path / "work").iterdir()), "new corpus units go to --work, not the committed seeds"


@pytest.mark.skipif(not has_atheris, reason="atheris is not installed (pip install atheris, part of the [dev] extra)")
def test_a_crash_is_saved_and_fails_the_run(tmp_path):
    r = _run("selftest", tmp_path, 20)
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    crashes = list((tmp_path / "artifacts").iterdir())
    assert len(crashes) == 1 and crashes[0].read_bytes().startswith(b"!")
    assert "selftest crash" in r.stderr and "1 crash(es)" in r.stdout
