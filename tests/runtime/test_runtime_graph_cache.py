"""The optimised-graph cache of onnxruntime CPU sessions: saved on the first session of an artefact, reused (with
graph optimisation off, the same outputs) on the next, and a tampered, corrupt or foreign cache entry is one warning
and a rebuild, never a crash."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from fakes.runtime import make_bundle

from co2s.bundle import artefact_record, load_bundle, read_manifest, write_manifest
from co2s.bundle.formats import get_format
from co2s.runtime.backends import graph_cache
from co2s.runtime.backends.ort import OrtBackend


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CO2S_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _folder(b, precision="fp32"):
    import onnxruntime

    return graph_cache.graph_folder(graph_cache.graph_key(b.artefact("onnx", precision), onnxruntime.__version__))


def _level(be) -> str:
    return str(be.session.get_session_options().graph_optimization_level)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_first_session_saves_the_graph_and_the_next_reuses_it(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "b", probs=True))
    first = OrtBackend(b, "fp32")
    folder = _folder(b)
    assert first.graph_note == f"optimised graph saved to {folder}"
    meta = json.loads((folder / "graph.json").read_text())
    assert meta["schema"] == graph_cache.SCHEMA and meta["key"]["artefact_sha256"] == b.artefact("onnx", "fp32").sha256
    assert meta["key"]["level"] == "ORT_ENABLE_ALL" and meta["key"]["onnxruntime"] and meta["key"]["cpu"]
    again = OrtBackend(b, "fp32")
    assert again.graph_note == f"optimised graph reused from {folder}"
    assert _level(again).endswith("ORT_DISABLE_ALL") and _level(first).endswith("ORT_ENABLE_ALL")
    x = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a, c = first.run(x), again.run(x)
    for name in a:
        np.testing.assert_array_equal(a[name], c[name])
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left
    assert any("reused" in n for n in again.info().notes)


@pytest.mark.parametrize("damage", ["graph", "sidecar", "foreign", "refused"])
def test_a_damaged_cache_entry_is_one_warning_and_rebuilt(tmp_path, caplog, damage):
    b = load_bundle(make_bundle(tmp_path / "b"))
    OrtBackend(b, "fp32")
    folder = _folder(b)
    graph, sidecar = folder / "model.onnx", folder / "graph.json"
    if damage == "graph":  # same size, other bytes: only the checksum can tell
        data = bytearray(graph.read_bytes())
        data[-20] ^= 0xFF
        graph.write_bytes(bytes(data))
        expect = "model.onnx has sha256"
    elif damage == "sidecar":
        sidecar.write_text('{"schema": ')
        expect = "graph.json is not valid JSON"
    elif damage == "foreign":  # an entry made by another onnxruntime, moved under this key
        meta = json.loads(sidecar.read_text())
        meta["key"]["onnxruntime"] = "0.0.1"
        sidecar.write_text(json.dumps(meta))
        expect = "graph.json was made for onnxruntime '0.0.1', this run has onnxruntime"
    else:  # checksum right, content no model at all
        graph.write_bytes(b"not a model")
        meta = json.loads(sidecar.read_text())
        meta["sha256"] = graph_cache.sha256_file(graph)
        sidecar.write_text(json.dumps(meta))
        expect = "onnxruntime refuses it"
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        be = OrtBackend(b, "fp32")
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and expect in warnings[0] and "rebuilding" in warnings[0]
    assert be.graph_note == f"optimised graph saved to {folder}"
    meta = json.loads(sidecar.read_text())
    assert meta["sha256"] == graph_cache.sha256_file(graph)  # rebuilt whole
    assert OrtBackend(b, "fp32").graph_note.startswith("optimised graph reused")


def test_another_cpu_or_onnxruntime_gets_its_own_entry(tmp_path, monkeypatch):
    import onnxruntime

    b = load_bundle(make_bundle(tmp_path / "b"))
    here = _folder(b)
    OrtBackend(b, "fp32")
    monkeypatch.setattr(graph_cache, "cpu_flags", lambda: {"sse2"})
    elsewhere = _folder(b)
    assert elsewhere != here and OrtBackend(b, "fp32").graph_note == f"optimised graph saved to {elsewhere}"
    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    assert _folder(b) not in (here, elsewhere)


def test_models_with_external_data_are_not_cached(tmp_path, cache):
    root = make_bundle(tmp_path / "b")
    fmt = get_format("onnx-data", "fp32")
    (root / fmt.filename).write_bytes(b"\0" * 64)  # stands in for the weights file of a >2 GB model
    data = read_manifest(root)
    data["artifacts"][fmt.key] = artefact_record(root, fmt)
    write_manifest(root, data)
    be = OrtBackend(load_bundle(root), "fp32")
    assert be.graph_note == "optimised graph not cached: external data (>2 GB)"
    assert not (cache / "ort-graphs").exists()


def test_an_unwritable_cache_still_opens_the_session(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CO2S_CACHE_DIR", str(blocker))
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        be = OrtBackend(load_bundle(make_bundle(tmp_path / "b")), "fp32")
    assert be.graph_note == "optimised graph not cached: cache not writable"
    assert len(_warnings(caplog)) == 1 and "not saved" in _warnings(caplog)[0]
    assert be.run(np.zeros((1, 32, 32, 3), np.uint8))["labels"].shape == (1, 32, 32)


def test_a_killed_build_leaves_nothing_that_is_read_and_is_cleaned_up(tmp_path):
    from co2s.files import temp_name

    b = load_bundle(make_bundle(tmp_path / "b"))
    folder = _folder(b)
    folder.parent.mkdir(parents=True)
    left = temp_name(folder)  # what a killed writer leaves: its pid is gone
    left = left.with_name(left.name.replace(f".{os.getpid()}.", ".999999."))
    left.mkdir()
    (left / "model.onnx").write_bytes(b"half a graph")
    assert OrtBackend(b, "fp32").graph_note == f"optimised graph saved to {folder}"
    assert not left.exists()


def test_a_model_onnxruntime_refuses_is_still_the_bundle_error(tmp_path):
    from fakes.runtime import make_onnx

    from co2s.errors import Co2SInputError

    root = make_bundle(tmp_path / "b")
    make_onnx(root / "model.fp32.onnx", tile=32, num_classes=4)
    (root / "model.fp32.onnx").write_bytes(b"junk" + (root / "model.fp32.onnx").read_bytes()[4:])
    data = read_manifest(root)
    data["artifacts"]["onnx_fp32"] = artefact_record(root, get_format("onnx", "fp32"))
    write_manifest(root, data)
    with pytest.raises(Co2SInputError, match="onnxruntime cannot load this model"):
        OrtBackend(load_bundle(root), "fp32")
