"""Dubai aerial patches and tile splits: on a small fake copy (always) and on the real data (when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from co2s.errors import Co2SInputError
from co2s.train.data import DubaiPatches, build_splits, default_dubai_root, dubai_splits, get_dataset_info

REAL_ROOT = REPO_ROOT.parent / "shared/data/dubai_aerial"
INFO = get_dataset_info("dubai")
COLORS = np.array([*INFO.label_colors, (0, 0, 0)], np.uint8)  # code 6 = black = ignore


def make_fake_dubai(root: Path, sizes: dict[int, list[tuple[int, int]]], seed=0) -> dict:
    """Tile_N/images/*.jpg + Tile_N/masks/*.png colour masks (Tile_2 as palette PNGs, like the real set).

    Returns {(tile, stem): expected decoded label}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for tile, shapes in sizes.items():
        (root / f"Tile_{tile}" / "images").mkdir(parents=True)
        (root / f"Tile_{tile}" / "masks").mkdir()
        for part, (h, w) in enumerate(shapes, start=1):
            stem = f"image_part_{part:03d}"
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / f"Tile_{tile}" / "images" / f"{stem}.jpg")
            codes = rng.integers(0, 7, (h, w))
            mask = Image.fromarray(COLORS[codes])
            if tile == 2:
                mask = mask.quantize(colors=7, method=Image.Quantize.MAXCOVERAGE)
                assert mask.mode == "P"
            mask.save(root / f"Tile_{tile}" / "masks" / f"{stem}.png")
            truth[(f"Tile_{tile}", stem)] = np.where(codes == 6, 255, codes).astype(np.uint8)
    return truth


@pytest.fixture
def fake_root(tmp_path):
    sizes = {1: [(70, 90), (71, 90)], 2: [(40, 50)], 3: [(64, 100)], 4: [(33, 33), (90, 64)]}
    return tmp_path, make_fake_dubai(tmp_path, sizes)


def test_windows_cover_every_image_and_stay_inside(fake_root):
    root, truth = fake_root
    ds = DubaiPatches(root, [1, "Tile_3"], patch=32)
    assert ds.tiles == ["Tile_1", "Tile_3"] and len(ds.pairs) == 3
    covered = {k: np.zeros(size, bool) for k, size in enumerate(ds.sizes)}
    for k, top, left in ds.windows:
        h, w = ds.sizes[k]
        assert 0 <= top <= h - 32 and 0 <= left <= w - 32  # last windows shifted back, not padded
        covered[k][top : top + 32, left : left + 32] = True
    assert all(c.all() for c in covered.values())
    assert len(ds) == 3 * 3 + 3 * 3 + 2 * 4  # 70 and 71 -> 3 rows, 90 -> 3 cols; 64 -> 2, 100 -> 4


def test_patches_decode_labels_by_colour_and_match_the_source(fake_root):
    root, truth = fake_root
    ds = DubaiPatches(root, [1, 2], patch=32, stride=16)
    for i in range(len(ds)):
        k, top, left = ds.windows[i]
        tile, _, mask_path = ds.pairs[k]
        image, label = ds[i]
        assert image.shape == (32, 32, 3) and label.shape == (32, 32)
        np.testing.assert_array_equal(label, truth[(tile, mask_path.stem)][top : top + 32, left : left + 32])
    assert ds.names[0] == "Tile_1/image_part_001_y0_x0"


def test_small_images_are_padded(fake_root):
    root, truth = fake_root
    ds = DubaiPatches(root, [4], patch=48)
    image, label = ds[0]  # the 33x33 image
    assert image.shape == (48, 48, 3) and label.shape == (48, 48)
    assert (image[33:] == 0).all() and (image[:, 33:] == 0).all()
    assert (label[33:] == 255).all() and (label[:, 33:] == 255).all()
    np.testing.assert_array_equal(label[:33, :33], truth[("Tile_4", "image_part_001")])


def test_whole_images_and_unlabeled(fake_root):
    root, _ = fake_root
    ds = DubaiPatches(root, [3], patch=None)
    assert len(ds) == 1 and ds[0][0].shape == (64, 100, 3) and ds[0][1].shape == (64, 100)
    assert DubaiPatches(root, [3], with_labels=False)[0][1] is None


def test_split_by_tile_on_fake_data(fake_root):
    root, _ = fake_root
    splits = dubai_splits(root, val_tiles=(2,), labeled_fraction=1 / 4, patch=32, seed=3)
    assert splits["val"].tiles == ["Tile_2"] and splits["val"].patch is None
    assert not set(splits["labeled"].tiles + splits["unlabeled"].tiles) & {"Tile_2"}
    labeled, unlabeled = set(splits["labeled"].names), set(splits["unlabeled"].names)
    assert not labeled & unlabeled
    assert len(labeled) == round((len(labeled) + len(unlabeled)) / 4)
    assert splits["unlabeled"][0][1] is None and splits["labeled"][0][1] is not None
    again = dubai_splits(root, val_tiles=(2,), labeled_fraction=1 / 4, patch=32, seed=3)
    assert again["labeled"].names == splits["labeled"].names
    other = dubai_splits(root, val_tiles=(2,), labeled_fraction=1 / 4, patch=32, seed=4)
    assert other["labeled"].names != splits["labeled"].names


def test_errors(fake_root, tmp_path):
    root, _ = fake_root
    with pytest.raises(Co2SInputError, match="Tile_9"):
        DubaiPatches(root, [9])
    with pytest.raises(Co2SInputError, match="Tile_7"):
        dubai_splits(root, val_tiles=(7,))
    (root / "Tile_3" / "masks" / "image_part_001.png").unlink()
    with pytest.raises(Co2SInputError, match="image_part_001.png"):
        DubaiPatches(root, [3])
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "Tile_1" / "masks" / "image_part_002.png")
    with pytest.raises(Co2SInputError, match=r"image_part_002.jpg.*image_part_002.png.*size"):
        DubaiPatches(root, [1])


def test_validate_reports_bad_mask_colours(fake_root):
    root, _ = fake_root
    ds = DubaiPatches(root, [4])
    ds.validate(progress=False)
    Image.fromarray(np.full((90, 64, 3), 7, np.uint8)).save(root / "Tile_4" / "masks" / "image_part_002.png")
    with pytest.raises(Co2SInputError, match=r"(?s)1 of 2 samples.*image_part_002.png.*\(7, 7, 7\)"):
        ds.validate(progress=False)


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CO2S_DUBAI_ROOT", str(tmp_path))
    assert default_dubai_root() == tmp_path
    monkeypatch.setenv("CO2S_DUBAI_ROOT", str(tmp_path / "missing"))
    with pytest.raises(Co2SInputError, match="CO2S_DUBAI_ROOT"):
        default_dubai_root()


# ------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_root():
    if not REAL_ROOT.is_dir():
        pytest.skip(f"Dubai aerial data not present at {REAL_ROOT} (shared/data/dubai_aerial next to the repo)")
    return REAL_ROOT


def test_real_all_pairs_found(real_root):
    ds = DubaiPatches(real_root, range(1, 9))
    assert len(ds.pairs) == 72 and len(ds.tiles) == 8
    assert all(image.stem == mask.stem for _, image, mask in ds.pairs)


def test_real_patches_cover_images(real_root):
    ds = DubaiPatches(real_root, [2])  # 509x544 images -> 3 x 2 windows each
    assert len(ds) == 9 * 3 * 2
    for k, (h, w) in enumerate(ds.sizes):
        covered = np.zeros((h, w), bool)
        for _, top, left in (win for win in ds.windows if win[0] == k):
            covered[top : top + 256, left : left + 256] = True
        assert covered.all()


def test_real_labels_in_range_including_palette_masks(real_root):
    ds = DubaiPatches(real_root, [2, 8])  # Tile_2 masks are palette PNGs; Tile_8 has black (ignored) pixels
    rng = np.random.default_rng(0)
    tiles_seen, values = set(), set()
    for i in rng.choice(len(ds), 12, replace=False).tolist() + [0]:
        image, label = ds[i]
        assert image.shape == (256, 256, 3) and label.shape == (256, 256)
        values |= set(np.unique(label).tolist())
        tiles_seen.add(ds.pairs[ds.windows[i][0]][0])
    assert values <= {0, 1, 2, 3, 4, 5, 255} and len(values) >= 4
    assert tiles_seen == {"Tile_2", "Tile_8"}


def test_real_split_by_tile(real_root):
    splits = build_splits("dubai", None, "1_8")  # default root: the shared folder
    val_tiles = set(splits["val"].tiles)
    train_tiles = set(splits["labeled"].tiles) | set(splits["unlabeled"].tiles)
    assert val_tiles and not val_tiles & train_tiles and len(val_tiles | train_tiles) == 8
    n_labeled, n_unlabeled = len(splits["labeled"]), len(splits["unlabeled"])
    assert abs(n_labeled / (n_labeled + n_unlabeled) - 1 / 8) < 0.005
    assert len(splits["val"]) == 9 * len(val_tiles)  # whole images
    splits["val"].validate(progress=False)  # decodes every val image and mask once
