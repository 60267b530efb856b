"""Profiler and benchmark reports carry every field (stages, percentiles, throughput, memory, device, versions)
in all three renderings, and warm-up samples are excluded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes.runtime import make_bundle
from PIL import Image

from co2s.runtime.profiler import STAGES, StageProfiler, render_markdown, render_table

STAT_FIELDS = {"count", "total_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "source"}
TOP_FIELDS = {
    "schema",
    "created",
    "device",
    "backend",
    "precision",
    "versions",
    "tile",
    "batch",
    "warmup_batches",
    "batches",
    "tiles",
    "megapixels",
    "wall_s",
    "tiles_per_s",
    "megapixels_per_s",
    "peak_host_memory_mb",
    "stages",
}


def check_report(rep: dict) -> None:
    assert TOP_FIELDS <= set(rep), TOP_FIELDS - set(rep)
    assert set(rep["stages"]) == set(STAGES)
    for st in rep["stages"].values():
        assert STAT_FIELDS <= set(st)
    dev = rep["device"]
    assert {"gpu", "cpu", "cpu_cores", "jetson_power_mode"} <= set(dev)
    assert dev["cpu"] and dev["cpu_cores"]
    assert rep["versions"]["numpy"] and rep["versions"]["python"]
    assert rep["peak_host_memory_mb"] and rep["peak_host_memory_mb"] > 0


def test_stage_statistics_and_warmup_exclusion():
    p = StageProfiler()
    p.warmup = True
    p.add("compute", 10.0)  # warm-up: must not appear
    p.count(tiles=100)
    p.warmup = False
    p.start()
    for ms in range(1, 101):
        p.add("compute", ms / 1e3)
    p.count(tiles=100, pixels=100 * 512 * 512, batches=100)
    p.stop()
    rep = p.report(backend="x", precision="fp32", tile=512, batch=1, warmup_batches=1)
    check_report(rep)
    c = rep["stages"]["compute"]
    assert c["count"] == 100 and c["max_ms"] == pytest.approx(100)
    assert (
        c["p50_ms"] == pytest.approx(50.5)
        and c["p90_ms"] == pytest.approx(90.1)
        and c["p99_ms"] == pytest.approx(99.01)
    )
    assert rep["stages"]["h2d"]["count"] == 0 and rep["stages"]["h2d"]["p50_ms"] is None
    assert rep["tiles"] == 100 and rep["megapixels"] == pytest.approx(26.2144)
    assert rep["tiles_per_s"] > 0 and rep["megapixels_per_s"] > 0
    table, md = render_table(rep), render_markdown(rep)
    for stage in STAGES:
        assert stage in table and f"| {stage} |" in md
    for word in (
        "p50",
        "p90",
        "p99",
        "max",
        "tiles/s",
        "MP/s",
        "peak host memory",
        "AMD" if "AMD" in rep["device"]["cpu"] else "",
    ):
        assert word in table and word in md


def test_infer_profile_writes_json_and_markdown(tmp_path, run_cli):
    bundle = make_bundle(tmp_path / "b", tile=32)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "out", "--profile", "-q"])
    assert code == 0
    assert "compute" in err and "tiles/s" in err
    rep = json.loads((tmp_path / "out" / "profile.json").read_text())
    check_report(rep)
    assert rep["backend"] == "ort-cpu" and rep["precision"] == "fp32" and rep["warmup_batches"] == 2
    for stage in ("read", "preprocess", "compute", "postprocess", "write"):
        assert rep["stages"][stage]["count"] > 0, stage
    assert rep["tiles"] == rep["stages"]["postprocess"]["count"]
    assert rep["megapixels"] == pytest.approx(90 * 120 / 1e6)
    assert "| compute |" in (tmp_path / "out" / "profile.md").read_text()


def test_bench_cli_reports_every_precision_and_batch(tmp_path, run_cli):
    bundle = make_bundle(tmp_path / "b", tile=32, precisions=("fp32", "int8"))
    code, out, _ = run_cli(
        "co2s-bench",
        [bundle, "--precision", "all", "--batch", "1,4", "--calls", "5", "--warmup", "2"]
        + ["--json", tmp_path / "bench.json", "--markdown", tmp_path / "bench.md"],
    )
    assert code == 0
    assert "p99 ms" in out and "int8" in out
    reports = json.loads((tmp_path / "bench.json").read_text())["reports"]
    assert [(r["precision"], r["batch"]) for r in reports] == [("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)]
    for r in reports:
        check_report(r)
        assert r["iterations"] == 5 and r["latency"]["count"] == 5 and r["stages"]["compute"]["count"] == 5
        assert r["agreement_vs_fp32"] == 1.0  # the fake INT8 model is the FP32 one
        assert r["tiles"] == 5 * r["batch"]
    md = (tmp_path / "bench.md").read_text()
    assert "agreement vs FP32" in md and "| ort-cpu | int8 | 4 |" in md


def test_bench_rejects_a_batch_the_model_cannot_take(tmp_path, run_cli):
    bundle = make_bundle(tmp_path / "b", tile=32, batch=(1, 1, 1))
    code, _, err = run_cli("co2s-bench", [bundle, "--batch", "4", "--calls", "1"])
    assert code == 1 and "at most 1" in err
