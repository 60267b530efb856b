"""Issue 13 on the export side: the int8-cpu artefact, a parity gate that leaves a failed precision out instead of
sinking the bundle (exit 4), calibration on the training dataset, and parity mIoU only where it means something."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from co2s.bundle import MANIFEST_NAME, load_bundle
from co2s.bundle.formats import ONNX, get_format
from co2s.cli import EXIT_OK, EXIT_PARTIAL
from co2s.errors import Co2SInputError
from co2s.export import calibration, parity

pytestmark = pytest.mark.timeout(900)


def test_int8_cpu_is_onnxruntime_integer_kernels_and_passes_parity(tiny_bundle):
    path = tiny_bundle / get_format(ONNX, "int8-cpu").filename
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # the default form: dynamic
    assert "QuantizeLinear" not in ops  # not the TensorRT Q/DQ form
    inits = onnx.load(str(path)).graph.initializer
    assert not [t.name for t in inits if t.data_type == onnx.TensorProto.FLOAT16]  # FP32 where not INT8
    data = load_bundle(tiny_bundle, verify=True).data
    assert data["precisions"]["int8-cpu"]["method"] == "ort-dynamic"
    assert data["precisions"]["int8-cpu"]["quantized_nodes"] > 0
    p = data["parity"]["int8-cpu"]
    assert p["passed"] and p["pixel_agreement"] >= 0.97 and p["reference"] == "onnx-fp32"


@pytest.fixture
def strict_int8(monkeypatch):
    """An int8 gate no graph can pass (agreement > 1): the real gate path, with a failure guaranteed."""
    monkeypatch.setitem(parity.THRESHOLDS, "int8", 1.01)


def test_failed_precision_is_left_out_and_the_export_is_partial(run_cli, tiny_checkpoint, tmp_path, strict_int8):
    out = tmp_path / "b"
    r = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--out", out, "--precision", "fp16,int8"])
    assert r.code == EXIT_PARTIAL, r.err
    assert "partial export: int8 left out" in r.err and "--calib-data" in r.err and "--allow-degraded" in r.err
    b = load_bundle(out, verify=True)
    assert b.precisions(ONNX) == ["fp32", "fp16"]
    assert not (out / get_format(ONNX, "int8").filename).exists()
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert data["parity"]["int8"]["passed"] is False and data["precisions"]["int8"]["written"] is False
    assert data["parity"]["fp16"]["passed"]


def test_allow_degraded_keeps_the_failed_precision_flagged(run_cli, tiny_checkpoint, tmp_path, strict_int8):
    out = tmp_path / "b"
    r = run_cli(
        "co2s-export", ["--checkpoint", tiny_checkpoint, "--out", out, "--precision", "int8", "--allow-degraded"]
    )
    assert r.code == EXIT_OK, r.err
    assert "int8 failed its parity gate" in r.err and "degraded" in r.err
    b = load_bundle(out, verify=True)
    assert b.precisions(ONNX) == ["fp32", "int8"] and not b.parity_passed("int8") and b.parity_passed("fp32")
    assert b.data["precisions"]["int8"]["degraded"] is True


def test_calibration_defaults_to_the_training_datasets_val_split():
    cfg = {"dataset": "synthetic", "num_val": 3, "image_size": 128, "seed": 0}
    c = calibration.load_calibration(None, 6, 64, cfg)
    assert c.source["kind"] == "dataset" and c.source["dataset"] == "synthetic" and len(c) == 6
    assert c.images.shape == (6, 64, 64, 3) and c.labels.shape == (6, 64, 64)
    assert c.truth_for(c.label_classes) is c.labels
    # the same scenes the trainer validates on
    from co2s.train.data import build_splits

    val = build_splits("synthetic", None, seed=0, num_val=3, size=128, parts=("val",))["val"]
    assert np.array_equal(c.images[0], val[0][0][:64, :64])


def test_calibration_on_a_dataset_that_cannot_be_read_says_what_to_pass(tmp_path):
    with pytest.raises(Co2SInputError, match=r"trained on dataset 'mer'.*--calib-data DIR"):
        calibration.load_calibration(None, 4, 64, {"dataset": "mer", "data_root": str(tmp_path / "nowhere")})


def test_dubai_checkpoint_calibrates_on_dubai_val_tiles():
    from co2s.train.data import default_dubai_root

    try:
        default_dubai_root()
    except Co2SInputError as e:
        pytest.skip(f"the Dubai aerial set is not here: {e}")
    c = calibration.load_calibration(None, 4, 256, {"dataset": "dubai"})
    assert c.source["kind"] == "dataset" and c.images.shape == (4, 256, 256, 3)
    assert c.labels is not None and set(np.unique(c.labels)) - {255} <= set(range(6))


def test_calib_data_skips_mask_folders_and_single_band_files(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("Tile_1/images", "Tile_1/masks"):
        (tmp_path / sub).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "Tile_1/images/a.jpg")
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "Tile_1/masks/a.png")
    Image.fromarray(rng.integers(0, 5, (80, 80), dtype=np.uint8)).save(tmp_path / "grey_label.png")
    c = calibration.load_calibration(tmp_path, 4, 64)
    assert c.source["files"] == 1 and c.source["skipped_label_like"] == 1
    only_masks = tmp_path / "only"
    (only_masks / "labels").mkdir(parents=True)
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(only_masks / "labels" / "x.png")
    with pytest.raises(Co2SInputError, match=r"no images found \(1 in mask folders"):
        calibration.load_calibration(only_masks, 4, 64)
    (only_masks / "grey.png").write_bytes((tmp_path / "grey_label.png").read_bytes())
    with pytest.raises(Co2SInputError, match="single-band or palette files"):
        calibration.load_calibration(only_masks, 4, 64)


def test_parity_miou_leaves_out_classes_too_rare_to_measure():
    fp32 = np.zeros((4, 50, 50), np.uint8)
    fp32[:, :25] = 1
    fp32[0, 0, 0:10] = 2  # 10 pixels of class 2 out of 10 000
    out = fp32.copy()
    out[0, 0, 0:10] = 0  # the rare class flips entirely: agreement 99.9 %
    conf = np.ones_like(fp32, dtype=np.float32)
    r = parity.vs_fp32({"labels": out, "confidence": conf}, {"labels": fp32, "confidence": conf}, None, 3)
    assert r["pixel_agreement"] == pytest.approx(0.999)
    assert r["miou_classes"] == [0, 1] and r["miou_delta"] > -0.2  # counted, class 2 alone would read -33
    only_rare = np.full((1, 10, 10), 2, np.uint8)
    r = parity.vs_fp32(
        {"labels": only_rare, "confidence": conf[:1, :10, :10]},
        {"labels": only_rare, "confidence": conf[:1, :10, :10]},
        np.full((1, 10, 10), 255, np.uint8),
        3,
    )
    assert r["miou_delta"] is None and r["miou_classes"] == []


def test_int8_methods_write_different_graphs(tiny_bundle, tmp_path):
    """ort-entropy once wrote a file byte-identical to ort-minmax (onnxruntime's 128-bin default leaves its KL
    search one candidate) while the manifest said "ort-entropy": each method must calibrate its own way."""
    import hashlib

    from co2s.export.precision import quantize_int8_ort

    fp32 = tiny_bundle / get_format(ONNX, "fp32").filename
    calib = calibration.synthetic(4, load_bundle(tiny_bundle).tile).images
    digests = {}
    for method in ("ort-minmax", "ort-entropy", "ort-percentile"):
        out = tmp_path / f"{method}.onnx"
        assert quantize_int8_ort(fp32, out, calib, method=method)["method"] == method
        digests[method] = hashlib.sha256(out.read_bytes()).hexdigest()
    assert len(set(digests.values())) == 3, digests


def test_default_calibration_keeps_the_pixel_count_not_the_tile_count():
    from co2s.export.options import default_calib_count

    assert [default_calib_count(t) for t in (64, 128, 256, 384, 512, 1024)] == [32, 32, 32, 14, 8, 8]
