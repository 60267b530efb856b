"""Class prototypes (docs/method.md §3.1): mean of UN-normalised concept embeddings then L2, seeded determinism,
text weights from a CLIP checkpoint, and the .npy (+ class names) files, ours and the reference's fp16 ones."""

from __future__ import annotations

import socket

import numpy as np
import open_clip
import pytest
import torch

from co2s.errors import Co2SInputError
from co2s.train.backbones.clip import build_text_tower
from co2s.train.prototypes import load_prototypes, save_prototypes, text_prototypes

CONCEPTS = [["building", "residential building", "high-rise"], ["road"], ["water", "lake", "river", "pond"]]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    # The tokenizer's BPE vocabulary is bundled with open_clip; nothing here may go online.
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shape_dtype_and_unit_rows():
    p = text_prototypes(CONCEPTS, clip="clip_tiny")
    assert p.shape == (3, 64) and p.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-6)


def test_mean_of_unnormalised_concept_embeddings_then_l2():
    tower = build_text_tower("clip_tiny", seed=3)
    tok = open_clip.get_tokenizer("ViT-B-16")
    want = []
    with torch.no_grad():
        for cls in CONCEPTS:
            e = tower(tok([f"a photo of a {c}" for c in cls]))
            m = e.mean(0)  # NOT the mean of normalised rows
            want.append((m / m.norm()).numpy())
    got = text_prototypes(CONCEPTS, clip="clip_tiny", seed=3)
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
    # and it is a different vector than averaging normalised rows would give
    with torch.no_grad():
        e = torch.nn.functional.normalize(tower(tok([f"a photo of a {c}" for c in CONCEPTS[2]])), dim=-1)
    alt = (e.mean(0) / e.mean(0).norm()).numpy()
    assert not np.allclose(got[2], alt, atol=1e-6)


def test_seeded_determinism_and_batching():
    a = text_prototypes(CONCEPTS, clip="clip_tiny", seed=1)
    b = text_prototypes(CONCEPTS, clip="clip_tiny", seed=1, batch_size=2)  # 4 batches, tqdm on
    c = text_prototypes(CONCEPTS, clip="clip_tiny", seed=2)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c)


def test_text_weights_come_from_the_clip_checkpoint(tmp_path):
    src = build_text_tower("clip_tiny", seed=11)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # open_clip training checkpoint naming
    state["module.visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)  # vision keys are ignored here
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": state}, path)
    np.testing.assert_array_equal(
        text_prototypes(CONCEPTS, clip="clip_tiny", weights=path, seed=0),
        text_prototypes(CONCEPTS, clip="clip_tiny", seed=11),
    )


def test_vision_only_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "visual_only.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 16, 16)}, path)
    with pytest.raises(Co2SInputError, match=r"visual_only\.pt.*token_embedding"):
        text_prototypes(CONCEPTS, clip="clip_tiny", weights=path)


@pytest.mark.parametrize("bad", [[], ["building", "road"], [["building"], []]])
def test_bad_concept_lists_are_rejected(bad):
    with pytest.raises(Co2SInputError):
        text_prototypes(bad, clip="clip_tiny")


def test_full_size_text_tower_shape():
    p = text_prototypes([["building"], ["road"]])  # ViT-B-16 text tower, random init
    assert p.shape == (2, 512)


def test_save_load_round_trip_with_names(tmp_path):
    names = ["building", "road", "water"]
    p = text_prototypes(CONCEPTS, clip="clip_tiny")
    npy = save_prototypes(tmp_path / "whdld", p, names)
    assert npy == tmp_path / "whdld.npy"
    assert (tmp_path / "whdld.classes.txt").read_text(encoding="utf-8") == "building\nroad\nwater\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["whdld.classes.txt", "whdld.npy"]  # no temp files left
    np.testing.assert_allclose(load_prototypes(npy, names), p, atol=1e-6)
    np.testing.assert_allclose(load_prototypes(tmp_path / "whdld"), p, atol=1e-6)
    with pytest.raises(Co2SInputError, match=r"whdld\.npy.*'road'.*'roads'"):
        load_prototypes(npy, ["building", "roads", "water"])


def test_reference_fp16_file_is_accepted(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 512)).astype(np.float16)
    ref /= np.linalg.norm(ref.astype(np.float32), axis=1, keepdims=True).astype(np.float16)  # norms 1 +- 1e-3
    path = tmp_path / "whdld_conceptavg6_single.npy"
    np.save(path, ref)
    p = load_prototypes(path, ["building", "road", "pavement", "vegetation", "bare soil", "water"])
    assert p.dtype == np.float32 and p.shape == (6, 512)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, ref.astype(np.float32), atol=2e-3)


def test_wrong_class_count_and_bad_files_are_rejected(tmp_path):
    path = tmp_path / "p.npy"
    np.save(path, np.eye(3, 8, dtype=np.float32))
    with pytest.raises(Co2SInputError, match=r"p\.npy: 3 prototype rows, but 4 classes"):
        load_prototypes(path, ["a", "b", "c", "d"])
    np.save(tmp_path / "flat.npy", np.ones(8, dtype=np.float32))
    with pytest.raises(Co2SInputError, match=r"flat\.npy"):
        load_prototypes(tmp_path / "flat.npy")
    with pytest.raises(Co2SInputError, match=r"missing\.npy: prototype file not found"):
        load_prototypes(tmp_path / "missing.npy")
    (tmp_path / "cut.npy").write_bytes(path.read_bytes()[:100])
    with pytest.raises(Co2SInputError, match=r"cut\.npy"):
        load_prototypes(tmp_path / "cut.npy")
    with pytest.raises(Co2SInputError):
        save_prototypes(tmp_path / "x", np.eye(3, 8), ["a", "b"])


def test_nan_rows_are_zeroed_then_rejected_only_if_empty(tmp_path):
    arr = np.eye(2, 4, dtype=np.float32)
    arr[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    np.testing.assert_array_equal(load_prototypes(tmp_path / "nan.npy"), np.eye(2, 4, dtype=np.float32))
    arr[1] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(Co2SInputError, match="row 1"):
        load_prototypes(tmp_path / "nan.npy")
