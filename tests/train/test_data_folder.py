"""Reference-layout folder datasets (docs/method.md §11): split files, per-benchmark file formats, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from co2s.errors import Co2SInputError
from co2s.train.data import SplitDataset, build_splits, get_dataset_info, open_split

# Image and label suffixes per benchmark (the reference's data, docs/method.md §11).
FORMATS = {
    "whdld": (".jpg", ".png"),
    "loveda": (".png", ".png"),
    "potsdam": (".png", ".png"),
    "gid": (".tif", ".tif"),
    "mer": (".jpg", ".png"),
    "msl": (".jpg", ".png"),
}


def make_benchmark(root, name, *, label_mode="L", counts=(2, 3, 2), size=(12, 10), seed=0):
    """Tiny images and labels in the dataset's encoding plus split files 1_8/{labeled,unlabeled}.txt and val.txt.

    Returns {part: [expected decoded label per line]}.
    """
    rng = np.random.default_rng(seed)
    info = get_dataset_info(name)
    image_suffix, label_suffix = FORMATS[name]
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    expected = {}
    for part, count in zip(("labeled", "unlabeled", "val"), counts):
        lines, labels = [], []
        for i in range(count):
            stem = f"{part}_{i}"
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / f"{stem}{image_suffix}")
            classes = rng.integers(0, info.num_classes, size)
            ignore = rng.random(size) < 0.15
            stored = np.where(ignore, 0, classes + 1) if info.reduce_zero_label else np.where(ignore, 255, classes)
            label = Image.fromarray(stored.astype(np.uint8))
            if label_mode == "P":
                label = label.convert("P")  # same indices; PIL returns them for P images
                label.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
            label.save(root / "labels" / f"{stem}{label_suffix}")
            lines.append(f"images/{stem}{image_suffix} labels/{stem}{label_suffix}")
            labels.append(np.where(ignore, 255, classes).astype(np.uint8))
        folder = root / "splits" / name / ("" if part == "val" else "1_8")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{part}.txt").write_text("\n".join(lines) + "\n")
        expected[part] = labels
    return expected


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("label_mode", ["L", "P"])
def test_benchmark_layout_parses_and_decodes(tmp_path, name, label_mode):
    expected = make_benchmark(tmp_path, name, label_mode=label_mode)
    splits = build_splits(name, tmp_path, "1_8")
    assert set(splits) == {"labeled", "unlabeled", "val"}
    for part, labels in expected.items():
        ds = splits[part]
        assert ds.info is get_dataset_info(name) and len(ds) == len(labels)
        assert ds.names == [f"images/{part}_{i}{FORMATS[name][0]}" for i in range(len(labels))]
        for i, want in enumerate(labels):
            image, label = ds[i]
            assert image.dtype == np.uint8 and image.shape == (12, 10, 3)
            if part == "unlabeled":
                assert label is None
            else:
                np.testing.assert_array_equal(label, want)
    splits["val"].validate(progress=False)


def test_open_split_matches_build_splits(tmp_path):
    make_benchmark(tmp_path, "whdld")
    ds = open_split("whdld", tmp_path, "ignored-for-val", "val")
    assert len(ds) == 2 and ds.list_file == tmp_path / "splits/whdld/val.txt"
    assert open_split(get_dataset_info("whdld"), tmp_path, "1_8", "unlabeled").with_labels is False


def test_datasets_pickle_for_dataloader_workers(tmp_path):
    make_benchmark(tmp_path, "msl")
    for ds in build_splits("msl", tmp_path).values():
        copy = pickle.loads(pickle.dumps(ds))
        assert copy.names == ds.names
        np.testing.assert_array_equal(copy[0][0], ds[0][0])


def test_unlabeled_lines_may_omit_the_label(tmp_path):
    make_benchmark(tmp_path, "mer")
    (tmp_path / "only_images.txt").write_text("images/unlabeled_0.jpg\n\nimages/unlabeled_1.jpg labels/gone.png\n")
    ds = SplitDataset(tmp_path, get_dataset_info("mer"), tmp_path / "only_images.txt", with_labels=False)
    assert len(ds) == 2 and ds[1][1] is None


def test_yaml_dataset_uses_the_same_layout(tmp_path):
    make_benchmark(tmp_path, "mer")  # reuse its files under a user-defined name
    (tmp_path / "splits" / "mer").rename(tmp_path / "splits" / "mars_region")
    yaml_path = tmp_path / "mars_region.yaml"
    mer = get_dataset_info("mer")
    yaml_path.write_text(
        "name: mars_region\n"
        f"classes: {list(mer.classes)}\n"
        "concepts: {Rocks: [boulders]}\n"
        f"palette: {[list(c) for c in mer.palette]}\n"
    )
    splits = build_splits(str(yaml_path), tmp_path, "1_8")
    assert splits["labeled"].info.name == "mars_region"
    assert splits["labeled"].info.concepts[4] == ("Rocks", "boulders")
    assert len(splits["val"]) == 2 and splits["val"][0][1] is not None


# ------------------------------------------------------------------------------------------------------ errors
def test_missing_root_or_split(tmp_path):
    with pytest.raises(Co2SInputError, match="needs a data root"):
        build_splits("whdld", None)
    with pytest.raises(Co2SInputError, match="does not exist"):
        build_splits("whdld", tmp_path / "nowhere")
    make_benchmark(tmp_path, "whdld")
    with pytest.raises(Co2SInputError) as e:
        build_splits("whdld", tmp_path, "1_4")
    assert "1_4" in str(e.value) and "labeled.txt" in str(e.value) and "1_8" in str(e.value)
    with pytest.raises(Co2SInputError, match="part"):
        open_split("whdld", tmp_path, "1_8", "test")


def test_missing_files_are_listed_with_line_numbers(tmp_path):
    make_benchmark(tmp_path, "whdld")
    (tmp_path / "labels" / "labeled_1.png").unlink()
    (tmp_path / "images" / "labeled_0.jpg").unlink()
    with pytest.raises(Co2SInputError) as e:
        open_split("whdld", tmp_path, "1_8", "labeled")
    message = str(e.value)
    assert "labeled.txt" in message and "2 listed file(s)" in message
    assert "line 1: images/labeled_0.jpg" in message and "line 2: labels/labeled_1.png" in message


def test_empty_and_malformed_split_files(tmp_path):
    make_benchmark(tmp_path, "gid")
    info = get_dataset_info("gid")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(Co2SInputError, match="empty.txt.*no samples"):
        SplitDataset(tmp_path, info, tmp_path / "empty.txt")
    (tmp_path / "short.txt").write_text("images/val_0.tif labels/val_0.tif\nimages/val_1.tif\n")
    with pytest.raises(Co2SInputError, match="short.txt, line 2"):
        SplitDataset(tmp_path, info, tmp_path / "short.txt")
    with pytest.raises(Co2SInputError, match="missing.txt"):
        SplitDataset(tmp_path, info, tmp_path / "missing.txt")


def test_size_mismatch_names_both_files(tmp_path):
    make_benchmark(tmp_path, "loveda")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "images" / "val_1.png")
    ds = open_split("loveda", tmp_path, "1_8", "val")
    ds[0]
    with pytest.raises(Co2SInputError) as e:
        ds[1]
    assert "images/val_1.png" in str(e.value) and "labels/val_1.png" in str(e.value)
    with pytest.raises(Co2SInputError, match=r"(?s)val.txt: 1 of 2 samples.*val_1"):
        ds.validate(progress=False)


def test_bad_label_value_found_by_validate(tmp_path):
    make_benchmark(tmp_path, "potsdam")
    Image.fromarray(np.full((12, 10), 9, np.uint8)).save(tmp_path / "labels" / "labeled_0.png")
    with pytest.raises(Co2SInputError, match=r"labeled_0.png: label value 9"):
        build_splits("potsdam", tmp_path)["labeled"].validate(progress=False)


def test_bad_split_name_for_dubai():
    with pytest.raises(Co2SInputError, match="1-8"):
        build_splits("dubai", None, "1-8")
