"""onnxruntime backend: it reproduces the model (fake bundles and a real `co2s-export` bundle), handles fixed and
dynamic batches, picks a backend automatically, and refuses bundles with missing or altered files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from fakes.runtime import make_bundle, reference_outputs

from co2s.bundle import load_bundle
from co2s.errors import Co2SInputError
from co2s.runtime.backends import BackendUnavailable, open_backend
from co2s.runtime.backends.gpu_probe import cuda_devices
from co2s.runtime.backends.ort import OrtBackend
from co2s.runtime.pipeline import predict_array


def _tiles(n, tile, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch", [(1, 2, 4), (2, 2, 2)])
def test_ort_cpu_matches_numpy_reference(tmp_path, batch):
    b = load_bundle(make_bundle(tmp_path / "b", tile=32, num_classes=5, batch=batch, probs=True))
    be = open_backend(b, "ort-cpu", "fp32")
    assert (be.name, be.precision, be.batch.max) == ("ort-cpu", "fp32", batch[2])
    x = _tiles(3 if batch[0] == 1 else 1, 32)  # fixed batch 2 gets one tile: padded, sliced back
    out = be.run(x)
    ref = reference_outputs(x, 5)
    assert out["labels"].shape == (len(x), 32, 32) and out["labels"].dtype == np.uint8
    assert np.mean(out["labels"] == ref["labels"]) > 0.999
    np.testing.assert_allclose(out["confidence"], ref["confidence"], atol=1e-5)
    np.testing.assert_allclose(out["probs"].astype(np.float32), ref["probs"], atol=2e-3)


def test_auto_backend_on_cpu_and_precision_choice(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "b", precisions=("fp32", "int8")))
    be = open_backend(b, measure=lambda bundle, ps, **kw: {"fp32": [1.0], "int8": [2.0]})
    if not cuda_devices():  # a GPU is what the driver sees, not a provider onnxruntime-gpu lists anyway
        assert be.name == "ort-cpu" and be.precision == "fp32"  # the measured faster one
    be8 = open_backend(b, "auto", "int8")
    assert be8.precision == "int8"
    with pytest.raises(Co2SInputError, match="no fp16 ONNX model"):
        open_backend(b, "ort-cpu", "fp16")


def test_missing_gpu_provider_says_what_to_install(tmp_path, monkeypatch):
    from fakes import ort as fake_ort

    fake_ort.install(monkeypatch, fake_ort.Machine(providers=("CPUExecutionProvider",)))  # the CPU-only package
    b = load_bundle(make_bundle(tmp_path / "b"))
    with pytest.raises(BackendUnavailable, match=r"this onnxruntime has no CUDAExecutionProvider.*co2s\[gpu\]"):
        OrtBackend(b, "fp32", "ort-cuda")
    with pytest.raises(Co2SInputError, match="no fp32 TensorRT engine.*co2s-export --from-bundle"):
        open_backend(b, "tensorrt", "fp32")


def test_checksum_mismatch_and_missing_file_name_the_file(tmp_path):
    root = make_bundle(tmp_path / "b", precisions=("fp32", "int8"))
    b = load_bundle(root)
    data = bytearray((root / "model.fp32.onnx").read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    (root / "model.fp32.onnx").write_bytes(bytes(data))
    with pytest.raises(Co2SInputError, match=r"checksum mismatch for model\.fp32\.onnx"):
        OrtBackend(b, "fp32")
    (root / "model.int8.onnx").unlink()
    with pytest.raises(Co2SInputError, match=r"int8 onnx file model\.int8\.onnx is missing"):
        OrtBackend(load_bundle(root), "int8")
    with open(root / "co2s.json", "a") as f:
        f.write("garbage")
    with pytest.raises(Co2SInputError, match="co2s.json"):
        load_bundle(root)
    with pytest.raises(Co2SInputError, match="not found"):
        load_bundle(tmp_path / "nope")


def test_model_that_does_not_match_the_manifest_is_refused(tmp_path):
    from fakes.runtime import make_onnx

    from co2s.bundle import artefact_record, read_manifest, write_manifest
    from co2s.bundle.formats import get_format

    root = make_bundle(tmp_path / "b", tile=32)
    make_onnx(root / "model.fp32.onnx", tile=64, num_classes=4)  # another tile size
    data = read_manifest(root)
    data["artifacts"]["onnx_fp32"] = artefact_record(root, get_format("onnx", "fp32"))
    write_manifest(root, data)
    with pytest.raises(Co2SInputError, match=r"uint8 \[batch, 32, 32, 3\]"):
        OrtBackend(load_bundle(root), "fp32")


# --- the real exporter's bundle ---------------------------------------------------------------------------------

EXPORT_ARGS = [
    "--untrained",
    "--preset",
    "tiny",
    "--num-classes",
    "5",
    "--tile",
    "128",
    "--precision",
    "fp32,int8",
    "--calib-count",
    "8",
]


@pytest.fixture(scope="module")
def exported_bundle(tmp_path_factory):
    pytest.importorskip("torch", reason="the exporter needs torch (the runtime does not)")
    out = tmp_path_factory.mktemp("export") / "tiny"
    exe = shutil.which("co2s-export", path=str(__import__("pathlib").Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-c", "from co2s.export.cli import main; main()"]
    r = subprocess.run(cmd + EXPORT_ARGS + ["--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_ort_backend_reproduces_the_export(exported_bundle):
    """Same tiles through (a) the exporter's own ORT parity runner, (b) the PyTorch model it exported, and
    (c) the runtime backend: (c) must equal (a) exactly and match (b) to the exporter's fp32 threshold."""
    from co2s.export.deploy import reference_predict
    from co2s.export.options import ExportOptions
    from co2s.export.parity import run_onnx
    from co2s.export.pipeline import load_model

    b = load_bundle(exported_bundle)
    assert b.tile == 128 and b.num_classes == 5 and b.precisions() == ["fp32", "int8"]
    tiles = _tiles(3, 128, seed=7)
    be = open_backend(b, "ort-cpu", "fp32")
    got = {
        k: np.concatenate([be.run(tiles[i : i + 1])[k] for i in range(len(tiles))]) for k in ("labels", "confidence")
    }
    exp = run_onnx(b.artefact("onnx", "fp32").path, tiles)
    assert np.array_equal(got["labels"], exp["labels"])
    np.testing.assert_array_equal(got["confidence"], exp["confidence"])

    model, *_ = load_model(ExportOptions(out=exported_bundle, untrained=True, preset="tiny", num_classes=5, tile=128))
    ref = reference_predict(model, tuple(model.students), "mean", tiles)
    assert np.mean(got["labels"] == ref["labels"]) >= b.parity["thresholds"]["fp32"]
    np.testing.assert_allclose(got["confidence"], ref["confidence"], atol=1e-4)

    # INT8 runs too; agreement with FP32 is the exporter's business (untrained: reported, not enforced)
    assert open_backend(b, "ort-cpu", "int8").run(tiles[:1])["labels"].shape == (1, 128, 128)


def test_real_bundle_tiled_scene_has_no_seams_inside_a_tile(exported_bundle):
    """With a real (context-using) model, a scene that fits one tile is exactly single-tile inference."""
    b = load_bundle(exported_bundle)
    be = open_backend(b, "ort-cpu", "fp32")
    rgb = _tiles(1, 128, seed=3)[0][:100, :120]
    got = predict_array(be, rgb)
    from co2s.runtime.tiling import pad_to_tile

    single = be.run(pad_to_tile(rgb, 128)[None])
    assert np.array_equal(got["labels"], single["labels"][0, :100, :120])
