"""The bundle contract on its own (no export): formats table, schema and validator (vs jsonschema), the typed
view, torch-free import."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from co2s.bundle import MANIFEST_NAME, ManifestError, artefact_record, load_bundle, read_manifest, write_manifest
from co2s.bundle.formats import FORMATS, FUSIONS, KINDS, PRECISIONS, get_format
from co2s.bundle.manifest import load_schema, schema_errors


def _minimal(tmp_path) -> dict:
    (tmp_path / get_format("onnx", "fp32").filename).write_bytes(b"onnx bytes")
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
        "artifacts": {"onnx_fp32": artefact_record(tmp_path, get_format("onnx", "fp32"))},
        "precisions": {"fp32": {}},
        "parity": {"images": 0, "thresholds": {}, "degraded_allowed": False},
        "producer": {"co2s": "0.1.0"},
    }


def test_formats_table_pins_the_bundle_layout():
    """Keys and file names are derived in one table; this is the on-disk contract the READMEs describe."""
    assert {f.key: f.filename for f in FORMATS} == {
        "onnx_fp32": "model.fp32.onnx",
        "onnx_fp16": "model.fp16.onnx",
        "onnx_int8": "model.int8.onnx",
        "onnx_int8_cpu": "model.int8-cpu.onnx",
        "onnx_fp32_data": "model.fp32.onnx.data",
        "onnx_fp16_data": "model.fp16.onnx.data",
        "onnx_int8_data": "model.int8.onnx.data",
        "onnx_int8_cpu_data": "model.int8-cpu.onnx.data",
        "engine_fp32": "model.fp32.engine",
        "engine_fp16": "model.fp16.engine",
        "engine_int8": "model.int8.engine",
        "timing_cache": "timing.cache",
    }


def test_schema_enums_are_the_formats_table_and_names():
    props = load_schema()["properties"]
    art = props["artifacts"]["additionalProperties"]["properties"]
    assert tuple(art["kind"]["enum"]) == KINDS
    assert tuple(art["precision"]["enum"]) == PRECISIONS == tuple(props["precisions"]["properties"])
    assert tuple(props["model"]["properties"]["fusion"]["enum"]) == FUSIONS


def test_load_bundle_roundtrip_and_errors(tmp_path):
    data = _minimal(tmp_path)
    write_manifest(tmp_path, data)
    assert read_manifest(tmp_path) == data
    b = load_bundle(tmp_path, verify=True)
    assert b.classes == ("a", "b") and b.tile == 64 and b.data == data
    assert b.artefact("onnx", "fp32").path == tmp_path / "model.fp32.onnx" and b.precisions() == ["fp32"]
    with pytest.raises(ManifestError, match="no fp16 TensorRT engine.*--from-bundle"):
        b.artefact("engine", "fp16")
    (tmp_path / "model.fp32.onnx").write_bytes(b"other bytes")
    load_bundle(tmp_path)  # checksums are checked per artefact when asked, not on every load
    with pytest.raises(ManifestError, match="model.fp32.onnx is 11 bytes, the manifest says 10"):
        load_bundle(tmp_path, verify=True)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_bundle(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["artifacts"].update(model=d["artifacts"].pop("onnx_fp32")), "stored under the key 'onnx_fp32'"),
        (lambda d: d["artifacts"]["onnx_fp32"].pop("precision"), "kind 'onnx' and precision None"),
        (lambda d: d["dataset"].update(classes=["a"]), "1 names, but model.num_classes is 2"),
    ],
)
def test_one_validation_for_reading_and_writing(tmp_path, mutate, message):
    data = _minimal(tmp_path)
    mutate(data)
    with pytest.raises(ValueError, match="refusing to write an invalid manifest"):
        write_manifest(tmp_path, data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_bundle(tmp_path)


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


def test_bundle_package_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import co2s.bundle, co2s.metrics, co2s.export.engines"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_list_formats_prints_the_table(run_cli):
    code, out, _ = run_cli("co2s-export", ["--list-formats"])
    assert code == 0
    assert "model.fp16.engine" in out and "model.int8.onnx" in out
