"""benchmarks/runtime_matrix.py --quick at the smallest size: the CSV the README links has the promised columns."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_runtime_matrix_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks/runtime_matrix.py"),
            "--quick",
            "--batches",
            "1,2",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--out-dir",
            str(tmp_path / "res"),
            "--work",
            str(tmp_path / "work"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for ext in ("csv", "md", "json", "png"):
        assert (tmp_path / "res" / f"runtime_matrix.{ext}").is_file(), ext
    with open(tmp_path / "res/runtime_matrix.csv") as f:
        rows = list(csv.DictReader(f))
    for col in (
        "backend",
        "precision",
        "batch",
        "tile",
        "p50_ms",
        "p99_ms",
        "speedup_vs_torch_fp32",
        "agreement_vs_fp32",
        "gflops",
        "attainment",
    ):
        assert col in rows[0], col
    got = {(x["backend"], x["precision"], x["batch"]) for x in rows}
    for b in ("1", "2"):
        assert ("ort-cpu", "fp32", b) in got and ("ort-cpu", "int8", b) in got
    ref = next(x for x in rows if x["backend"] == "ort-cpu" and x["precision"] == "fp32" and x["batch"] == "1")
    assert float(ref["agreement_vs_fp32"]) == 1.0 and float(ref["p50_ms"]) > 0 and 0 < float(ref["attainment"]) < 1
    if any(x["backend"] == "pytorch-eager" for x in rows):  # torch installed: ratios computed in the same run
        assert float(ref["speedup_vs_torch_fp32"]) > 0
    md = (tmp_path / "res/runtime_matrix.md").read_text()
    assert "untrained weights: True" in md and "peak GEMM" in md


def test_accuracy_quick(tmp_path):
    """benchmarks/accuracy.py --quick, cut down to one bundle: PyTorch rows per student + fused, ORT fp32/int8 rows."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks/accuracy.py"),
            "--quick",
            "--iters",
            "10",
            "--num-val",
            "4",
            "--calib-count",
            "4",
            "--models",
            "fused",
            "--precisions",
            "fp32",
            "int8",
            "--out-dir",
            str(tmp_path / "res"),
            "--work",
            str(tmp_path / "work"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for ext in ("csv", "md", "png"):
        assert (tmp_path / "res" / f"accuracy.{ext}").is_file(), ext
    with open(tmp_path / "res/accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    for col in ("dataset", "model", "backend", "precision", "miou", "iou_bare_soil"):
        assert col in rows[0], col
    got = {(x["model"], x["backend"], x["precision"]): float(x["miou"]) for x in rows}
    for m in ("clip", "dinov3", "fused"):
        assert (m, "pytorch", "fp32") in got
    assert ("fused", "ort-cpu", "fp32") in got and ("fused", "ort-cpu", "int8") in got
    assert all(0 <= v <= 100 for v in got.values())
    # same model, same images, same IoU accumulation: the exported fp32 graph scores like PyTorch
    assert abs(got[("fused", "ort-cpu", "fp32")] - got[("fused", "pytorch", "fp32")]) < 5
    assert "| fused | ort-cpu | int8 |" in (tmp_path / "res/accuracy.md").read_text()


def test_soak_quick(tmp_path):
    """benchmarks/soak.py --quick on a fake bundle: samples, summary and chart are written, memory stays flat
    (exit 0), and a deliberate leak (--inject-leak-kb) is caught (exit 1, FAIL)."""
    from fakes.runtime import make_bundle

    bundle = make_bundle(tmp_path / "bundle", tile=64, num_classes=4, probs=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks/soak.py"), "--quick", "--bundle", str(bundle), "--threads", "1"]
    r = subprocess.run(
        cmd + ["--out-dir", str(tmp_path / "res"), "--work", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for ext in ("csv", "md", "png"):
        assert (tmp_path / "res" / f"soak.{ext}").is_file(), ext
    with open(tmp_path / "res/soak.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"tiles_done", "seconds", "rss_mb"} <= set(rows[0])
    assert int(rows[-1]["tiles_done"]) >= 1500 and all(float(x["rss_mb"]) > 0 for x in rows)
    md = (tmp_path / "res/soak.md").read_text()
    assert "**PASS**" in md and "onnxruntime" in md and "cores" in md and "peak drift" in md
    assert "PASS" in r.stdout

    leak = subprocess.run(
        cmd + ["--inject-leak-kb", "64", "--out-dir", str(tmp_path / "leak"), "--work", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert leak.returncode == 1, leak.stdout[-3000:] + leak.stderr[-3000:]
    assert "**FAIL**" in (tmp_path / "leak/soak.md").read_text()


def test_train_compare_seeds_and_reuse(tmp_path):
    """benchmarks/train_compare.py with two seeds: mean ± std rows per method; a second run reuses finished runs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(REPO_ROOT / "benchmarks/train_compare.py"),
        "--datasets",
        "synthetic",
        "--methods",
        "co2s",
        "supervised",
        "--iters",
        "3",
        "--batch-size",
        "1",
        "--seeds",
        "0",
        "1",
        "--synthetic-split",
        "4,8",
        "--out",
        str(tmp_path / "res"),
        "--work",
        str(tmp_path / "work"),
        "--no-progress",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "res/train_compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(x["method"], x["seed"], x["prediction"]) for x in rows} == {
        (m, s, p) for m in ("co2s", "supervised") for s in "01" for p in ("clip", "dinov3", "fused")
    }
    assert all(0 <= float(x["miou"]) <= 100 for x in rows)
    md = (tmp_path / "res/train_compare.md").read_text()
    assert "## synthetic 4+8 (3 iterations, batch 1)" in md and "| co2s | 0,1 | " in md and " ± " in md
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("reusing the finished run") == 4, again.stdout[-3000:]
    with open(tmp_path / "res/train_compare.csv") as f:
        drop_time = lambda rs: [{k: v for k, v in x.items() if k != "seconds"} for x in rs]  # noqa: E731
        assert drop_time(csv.DictReader(f)) == drop_time(rows)


def test_cpu_int8_quick(tmp_path):
    """benchmarks/cpu_int8.py --quick: every CPU INT8 form written from one FP32 graph and timed interleaved."""
    from co2s.bundle.formats import CPU_INT8_FORMS

    r = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks/cpu_int8.py"), "--quick", "--out-dir", str(tmp_path / "res")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "res/cpu_int8.csv") as f:
        rows = {x["form"]: x for x in csv.DictReader(f)}
    assert set(rows) == {"-", *CPU_INT8_FORMS}
    assert float(rows["-"]["speedup_vs_fp32"]) == 1.0 and float(rows["-"]["pixel_agreement"]) == 1.0
    for form in CPU_INT8_FORMS:
        assert float(rows[form]["p50_ms"]) > 0 and 0 <= float(rows[form]["pixel_agreement"]) <= 1
    assert "interleaved" in (tmp_path / "res/cpu_int8.md").read_text()
