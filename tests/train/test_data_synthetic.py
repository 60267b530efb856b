"""Synthetic scenes: deterministic, every class present, usable as a dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest

from co2s.errors import Co2SInputError
from co2s.train.data import SyntheticDataset, build_splits, make_large_scene, make_scene, synthetic_splits


def test_same_seed_same_scene_and_different_seed_differs():
    a_image, a_label = make_scene(5, 96)
    b_image, b_label = make_scene(5, 96)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    c_image, c_label = make_scene(6, 96)
    assert not np.array_equal(a_image, c_image) and not np.array_equal(a_label, c_label)


@pytest.mark.parametrize("size, shape", [(64, (64, 64)), ((50, 130), (50, 130)), (1, (1, 1))])
def test_shapes_and_types(size, shape):
    image, label = make_scene(1, size)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    assert label.shape == shape and label.dtype == np.uint8


def test_every_class_appears_within_a_few_scenes():
    seen = set()
    for seed in range(8):
        _, label = make_scene(seed, 128)
        assert label.max() < 5
        seen |= set(np.unique(label).tolist())
    assert seen == {0, 1, 2, 3, 4}


def test_colour_alone_is_informative_but_not_enough():
    """A per-pixel nearest-class-colour classifier is far above chance, yet misses much: shape matters."""
    correct = total = 0
    for seed in range(4):
        image, label = make_scene(seed, 192)
        pixels, truth = image.reshape(-1, 3).astype(np.float32), label.ravel()
        classes = np.unique(truth)
        means = np.stack([pixels[truth == k].mean(0) for k in classes])
        guess = classes[np.argmin(((pixels[:, None] - means[None]) ** 2).sum(-1), 1)]
        correct, total = correct + (guess == truth).sum(), total + truth.size
    assert 0.5 < correct / total < 0.97


def test_scene_is_fast():
    make_scene(0, 512)
    start = time.perf_counter()
    make_scene(1, 512)
    assert time.perf_counter() - start < 0.3  # ~0.04 s on one core


def test_large_scene_is_continuous_strip_rendering():
    image, label = make_large_scene(2, 1100, 700)  # several render strips, odd size
    assert image.shape == (1100, 700, 3) and label.shape == (1100, 700)
    # no seams: neighbouring rows across every strip boundary agree about as well as inside a strip
    same = (label[1:] == label[:-1]).mean(1)
    assert same.min() > 0.8


def test_4096_scene_within_seconds():
    start = time.perf_counter()
    image, label = make_large_scene(9, 4096, 4096)
    assert time.perf_counter() - start < 10  # ~2 s on one core
    assert image.shape == (4096, 4096, 3) and set(np.unique(label).tolist()) == {0, 1, 2, 3, 4}


def test_invalid_arguments():
    with pytest.raises(Co2SInputError, match="size"):
        make_scene(0, 0)
    with pytest.raises(Co2SInputError, match="seed"):
        make_scene(-1, 8)
    with pytest.raises(Co2SInputError, match="size"):
        SyntheticDataset(0, 8, 0)


def test_dataset_interface():
    ds = SyntheticDataset(3, 32, seed=4)
    assert len(ds) == 3 and ds.info.name == "synthetic" and ds.info.num_classes == 5
    image, label = ds[2]
    np.testing.assert_array_equal(image, make_scene(4 * 1_000_003 + 2, 32)[0])
    np.testing.assert_array_equal(ds[-1][1], label)
    with pytest.raises(IndexError):
        ds[3]
    assert len(set(ds.names)) == 3
    ds.validate(progress=False)
    assert SyntheticDataset(2, 32, seed=4, with_labels=False)[0][1] is None


def test_splits_are_disjoint_and_unlabeled_has_no_labels():
    splits = synthetic_splits(4, 6, 2, size=32, seed=1)
    assert [len(splits[k]) for k in ("labeled", "unlabeled", "val")] == [4, 6, 2]
    names = [set(splits[k].names) for k in splits]
    assert sum(len(n) for n in names) == len(set().union(*names))
    assert splits["unlabeled"][0][1] is None and splits["val"][0][1] is not None


def test_build_splits_synthetic_ignores_root():
    splits = build_splits("synthetic", "/does/not/matter", seed=2, size=40, num_labeled=2, num_unlabeled=3, num_val=1)
    assert [len(splits[k]) for k in ("labeled", "unlabeled", "val")] == [2, 3, 1]
    assert splits["labeled"][0][0].shape == (40, 40, 3)
    assert build_splits("synthetic", None)["val"][0][0].shape == (128, 128, 3)  # the dataset's crop size
