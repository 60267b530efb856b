"""The manifest schema and validator on their own (no export): torch-free import, validator vs jsonschema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from co2s.runtime.manifest import (
    MANIFEST_NAME,
    ManifestError,
    artifact_record,
    load_manifest,
    load_schema,
    schema_errors,
)


def _minimal(tmp_path) -> dict:
    (tmp_path / "model.fp32.onnx").write_bytes(b"onnx bytes")
    return {
        "format": "co2s-bundle",
        "schema_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "model": {
            "preset": "tiny",
            "students": ["clip"],
            "fusion": "mean",
            "num_classes": 2,
            "tile": 64,
            "untrained": True,
            "checkpoint": None,
            "folded": [],
        },
        "dataset": {"name": "x", "classes": ["a", "b"], "palette": [[0, 0, 0], [255, 255, 255]]},
        "input": {"name": "images", "dtype": "uint8", "shape": [1, 64, 64, 3]},
        "outputs": [
            {"name": "labels", "dtype": "uint8", "shape": [1, 64, 64]},
            {"name": "confidence", "dtype": "float32", "shape": [1, 64, 64]},
        ],
        "batch": {"dynamic": False, "min": 1, "opt": 1, "max": 1},
        "normalization": {
            "in_graph": True,
            "input_range": [0, 255],
            "students": {"clip": {"mean": [0.5] * 3, "std": [0.25] * 3}},
        },
        "artifacts": {"onnx_fp32": artifact_record(tmp_path, "model.fp32.onnx", "onnx", precision="fp32")},
        "precisions": {"fp32": {}},
        "parity": {"images": 0, "thresholds": {}, "degraded_allowed": False},
        "producer": {"co2s": "0.1.0"},
    }


def test_load_manifest_roundtrip_and_errors(tmp_path):
    data = _minimal(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    m = load_manifest(tmp_path)
    assert m.classes == ["a", "b"] and m.tile == 64 and m.onnx_path() == tmp_path / "model.fp32.onnx"
    with pytest.raises(ManifestError, match="no fp16 TensorRT engine.*--from-bundle"):
        m.engine_path("fp16")
    (tmp_path / "model.fp32.onnx").write_bytes(b"other bytes")
    with pytest.raises(ManifestError, match="sha256|bytes"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d["model"].update(fusion="vote"), "model.fusion"),
        (lambda d: d.pop("dataset"), "dataset"),
        (lambda d: d["dataset"]["palette"].append([1, 2]), "palette"),
        (lambda d: d["artifacts"]["onnx_fp32"].update(path="/abs/model.onnx"), "path"),
        (lambda d: d["model"].update(extra=1), "extra"),
        (lambda d: d["batch"].update(min=0), "batch.min"),
    ],
)
def test_validator_agrees_with_jsonschema(tmp_path, mutate, where):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is a dev-only cross-check of the built-in validator"
    )
    good = _minimal(tmp_path)
    assert schema_errors(good) == []
    jsonschema.validate(good, load_schema())
    bad = copy.deepcopy(good)
    mutate(bad)
    errors = schema_errors(bad)
    assert errors and any(where in e for e in errors), errors
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema())


def test_manifest_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import co2s.runtime.manifest, co2s.export.formats, co2s.export.engines"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_list_formats_prints_the_table(capsys):
    from co2s.export.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--list-formats"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "model.fp16.engine" in out and "model.int8.onnx" in out
