"""Bad input stops a run before the first iteration, with a Co2SInputError naming the file or field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from co2s.errors import Co2SInputError
from co2s.train.config import TrainConfig
from co2s.train.trainer import evaluate_checkpoint, fit

SMALL = dict(preset="tiny", crop=64, image_size=64, batch_size=1, workers=0, iters=1)


def _fit(root: Path, out: Path, **kw):
    return fit(TrainConfig(dataset="mer", data_root=str(root), out=str(out), **{**SMALL, **kw}), progress=False)


def test_good_folder_dataset_trains(tmp_path, folder_dataset):
    _fit(folder_dataset(), tmp_path / "out")
    assert (tmp_path / "out" / "last.pt").is_file()


@pytest.mark.parametrize(
    "problem,kw,names",
    [
        (
            "missing file",
            dict(labeled_lines=["images/0.png labels/0.png", "images/gone.png labels/gone.png"]),
            ["labeled.txt", "gone.png"],
        ),
        ("label out of range", dict(label_value=12), ["2.png", "label value 12"]),
        ("size mismatch", dict(label_size=(32, 40)), ["2.png", "same size"]),
        ("empty labelled split", dict(labeled_lines=[]), ["labeled.txt", "no samples"]),
    ],
)
def test_bad_dataset_stops_before_training(tmp_path, problem, kw, names, folder_dataset):
    root = folder_dataset(**kw)
    with pytest.raises(Co2SInputError) as e:
        _fit(root, tmp_path / "out")
    for name in names:
        assert name in str(e.value), (problem, str(e.value))
    assert not (tmp_path / "out" / "last.pt").exists()


def test_missing_data_root_is_named(tmp_path):
    with pytest.raises(Co2SInputError, match="does not exist"):
        _fit(tmp_path / "nowhere", tmp_path / "out")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_run")
    fit(
        TrainConfig(dataset="synthetic", out=str(out), num_labeled=1, num_unlabeled=1, num_val=1, **SMALL),
        progress=False,
    )
    return out


def test_resume_with_a_checkpoint_from_another_dataset(tmp_path, synthetic_run, folder_dataset):
    root = folder_dataset()
    # mer has 9 classes, the synthetic run 5: the class count is checked first
    with pytest.raises(Co2SInputError, match=r"last\.pt: field model_config\.num_classes is 5, expected 9"):
        fit(
            TrainConfig(dataset="mer", data_root=str(root), out=str(synthetic_run), **SMALL),
            resume=True,
            progress=False,
        )


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(Co2SInputError, match="last.pt: checkpoint file not found"):
        fit(TrainConfig(dataset="synthetic", out=str(tmp_path), **SMALL), resume=True, progress=False)


def test_evaluate_with_a_checkpoint_from_another_dataset(tmp_path, synthetic_run, folder_dataset):
    with pytest.raises(Co2SInputError, match="model_config.num_classes is 5, expected 9"):
        evaluate_checkpoint(str(synthetic_run / "best.pt"), "mer", data_root=str(folder_dataset(tmp_path / "d")))
    # same class count, other classes: a YAML dataset with five other names
    yaml_file = tmp_path / "five.yaml"
    yaml_file.write_text(
        "name: five\nclasses: [a, b, c, d, e]\nconcepts: {}\npalette: [[0,0,0],[1,1,1],[2,2,2],[3,3,3],[4,4,4]]\n"
    )
    with pytest.raises(Co2SInputError, match=r"classes \(bare_soil, vegetation, water, building, road\) are not"):
        evaluate_checkpoint(str(synthetic_run / "best.pt"), str(yaml_file), data_root=str(tmp_path))


def test_evaluate_scores_another_region_with_the_same_classes(tmp_path, synthetic_run):
    """Cross-region evaluation: another dataset name, the same classes (spelt with spaces here), and only a val
    split file (no labelled split of the training fraction)."""
    root = tmp_path / "region_b"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 60 * i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full((64, 64), i, np.uint8)).save(root / "labels" / f"{i}.png")
        lines.append(f"images/{i}.png labels/{i}.png")
    (root / "splits" / "region_b").mkdir(parents=True)
    (root / "splits" / "region_b" / "val.txt").write_text("\n".join(lines) + "\n")
    yaml_file = tmp_path / "region_b.yaml"
    yaml_file.write_text(
        "name: region_b\nclasses: [bare soil, vegetation, water, building, road]\nconcepts: {}\n"
        "palette: [[0,0,0],[1,1,1],[2,2,2],[3,3,3],[4,4,4]]\n"
    )
    result = evaluate_checkpoint(str(synthetic_run / "best.pt"), str(yaml_file), data_root=str(root), progress=False)
    assert result.classes == ("bare soil", "vegetation", "water", "building", "road")
    assert set(result.iou) == {"clip", "dinov3", "fused"} and all(len(v) == 5 for v in result.iou.values())
    with pytest.raises(Co2SInputError, match=r"splits/region_b/1_8/labeled\.txt not found"):
        evaluate_checkpoint(str(synthetic_run / "best.pt"), str(yaml_file), data_root=str(root), part="labeled")
