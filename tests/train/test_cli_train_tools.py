"""`co2s-train prototypes` and `co2s-train info`: the commands users run before training."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from co2s.train.prototypes import load_prototypes


def _run(*args: str) -> subprocess.CompletedProcess:
    code = "from co2s.train.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_prototypes_command_writes_named_unit_rows(tmp_path):
    out = tmp_path / "whdld.npy"
    r = _run("prototypes", "--dataset", "whdld", "--preset", "tiny", "--out", str(out))
    assert r.returncode == 0, r.stderr
    protos = load_prototypes(out, ["building", "road", "pavement", "vegetation", "bare soil", "water"])
    assert protos.shape == (6, 64)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1, atol=1e-5)


def test_unknown_dataset_is_one_clear_line(tmp_path):
    r = _run("prototypes", "--dataset", "atlantis", "--preset", "tiny", "--out", str(tmp_path / "x.npy"))
    assert r.returncode == 1
    assert "unknown dataset 'atlantis'" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_info_prints_counts_per_student():
    r = _run("info", "--preset", "tiny", "--num-classes", "5")
    assert r.returncode == 0, r.stderr
    assert "clip:" in r.stdout and "dinov3:" in r.stdout and "trainable" in r.stdout
