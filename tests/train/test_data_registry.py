"""Dataset registry: built-in values from the reference (docs/method.md §11), shipped as data files, and
user-defined YAML datasets."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import tomllib
from conftest import REPO_ROOT

from co2s.errors import Co2SInputError
from co2s.train.data import DatasetInfo, get_dataset_info, list_datasets, load_dataset_yaml
from co2s.train.data.registry import BUILTIN_DIR

# The reference's classes in order, reduce_zero_label, crop size, palette.
SPEC = {
    "whdld": (
        ["building", "road", "pavement", "vegetation", "bare soil", "water"],
        True,
        256,
        [(255, 0, 0), (255, 255, 0), (192, 192, 0), (0, 255, 0), (128, 128, 128), (0, 0, 255)],
    ),
    "loveda": (
        ["background", "building", "road", "water", "barren", "forest", "agriculture"],
        True,
        512,
        [(255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128)],
    ),
    "potsdam": (
        ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"],
        True,
        512,
        [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)],
    ),
    "gid": (
        [
            "industrial_land",
            "urban_residential",
            "rural_residential",
            "traffic_land",
            "paddy_field",
            "irrigated_land",
            "dry_cropland",
            "garden_plot",
            "arbor_woodland",
            "shrub_land",
            "natural_grassland",
            "artificial_grassland",
            "river",
            "lake",
            "pond",
        ],
        False,
        512,
        [
            (200, 0, 0),
            (250, 0, 150),
            (200, 150, 150),
            (250, 150, 150),
            (0, 200, 0),
            (150, 250, 0),
            (150, 200, 150),
            (200, 0, 200),
            (150, 0, 250),
            (150, 150, 250),
            (250, 200, 0),
            (200, 200, 0),
            (0, 0, 200),
            (0, 150, 200),
            (0, 200, 250),
        ],
    ),
}
MARS = (
    ["Martian Soil", "Sands", "Gravel", "Bedrock", "Rocks", "Tracks", "Shadows", "Unknown", "Background"],
    False,
    512,
    [
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
        (64, 0, 0),
        (192, 0, 0),
    ],
)
SPEC["mer"] = SPEC["msl"] = MARS

# The reference's number of entries per concept set (class name included).
CONCEPT_COUNTS = {
    "whdld": [6, 6, 6, 6, 6, 7],
    "loveda": [5, 6, 6, 6, 6, 6, 6],
    "potsdam": [6] * 6,
    "gid": [6] * 15,
    "mer": [6] * 9,
    "msl": [6] * 9,
}


def test_list_datasets():
    assert list_datasets() == sorted(["whdld", "loveda", "potsdam", "gid", "mer", "msl", "dubai", "synthetic"])


@pytest.mark.parametrize("name", ["whdld", "loveda", "potsdam", "gid", "mer", "msl", "dubai", "synthetic"])
def test_builtin_datasets_are_data_files_read_like_a_users(tmp_path, name):
    shipped = BUILTIN_DIR / f"{name}.yaml"
    user_copy = tmp_path / f"my_{name}.yaml"
    user_copy.write_text(shipped.read_text())
    assert get_dataset_info(name) == load_dataset_yaml(shipped) == get_dataset_info(user_copy)
    assert get_dataset_info(name.upper()) == get_dataset_info(name)


def test_builtin_dataset_files_are_package_data():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "co2s.train.data.datasets" in setuptools["packages"]  # a data-only package: no __init__.py
    patterns = setuptools["package-data"]["co2s.train.data.datasets"]
    assert BUILTIN_DIR == REPO_ROOT / "train" / "data" / "datasets"
    for path in sorted(BUILTIN_DIR.iterdir()):
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path.name


@pytest.mark.parametrize("name", sorted(SPEC))
def test_benchmark_matches_spec(name):
    classes, reduce_zero_label, crop, palette = SPEC[name]
    info = get_dataset_info(name)
    assert info.name == name
    assert list(info.classes) == classes and info.num_classes == len(classes)
    assert info.reduce_zero_label is reduce_zero_label
    assert info.crop_size == crop
    assert list(info.palette) == palette
    assert [c[0] for c in info.concepts] == classes
    assert [len(c) for c in info.concepts] == CONCEPT_COUNTS[name]
    assert info.label_colors is None and info.ignore_colors == ()


def test_concept_spot_checks():
    assert get_dataset_info("whdld").concepts[5] == (
        "water",
        "lake",
        "river",
        "pond",
        "water body",
        "water surface",
        "reservoir",
    )
    assert get_dataset_info("gid").concepts[3][-1] == "parking and driveway"
    assert get_dataset_info("msl").concepts == get_dataset_info("mer").concepts


def test_dubai_colours_follow_readme_table():
    info = get_dataset_info("dubai")
    assert info.classes == ("Building", "Land", "Road", "Vegetation", "Water", "Unlabeled")
    assert info.label_colors == (
        (60, 16, 152),
        (132, 41, 246),
        (110, 193, 228),
        (254, 221, 58),
        (226, 169, 41),
        (155, 155, 155),
    )
    assert info.ignore_colors == ((0, 0, 0),)
    assert info.palette == info.label_colors and info.crop_size == 256 and not info.reduce_zero_label


def test_synthetic_info():
    info = get_dataset_info("synthetic")
    assert info.classes == ("bare_soil", "vegetation", "water", "building", "road")
    assert info.crop_size == 128 and len(info.palette) == 5


def test_unknown_dataset_lists_known_names():
    with pytest.raises(Co2SInputError) as e:
        get_dataset_info("marsx")
    assert "marsx" in str(e.value) and "whdld" in str(e.value) and "synthetic" in str(e.value)


def test_dataset_info_checks_consistency():
    with pytest.raises(Co2SInputError, match="palette"):
        DatasetInfo("x", ("a", "b"), ((0, 0, 0),), (("a",), ("b",)))
    with pytest.raises(Co2SInputError, match="concepts"):
        DatasetInfo("x", ("a",), ((0, 0, 0),), (("not a",),))


# ------------------------------------------------------------------------------------------------ YAML datasets
GOOD_YAML = """\
name: my_city
classes: [building, road, tree]
concepts:
  building: [house, roof]
  road: [road, street]
palette: [[255, 0, 0], [128, 128, 128], [0, 200, 0]]
crop_size: 256
"""


def write(tmp_path, text, name="region.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_round_trip(tmp_path):
    info = load_dataset_yaml(write(tmp_path, GOOD_YAML))
    assert info.name == "my_city"
    assert info.classes == ("building", "road", "tree")
    assert info.concepts == (("building", "house", "roof"), ("road", "street"), ("tree",))
    assert info.palette == ((255, 0, 0), (128, 128, 128), (0, 200, 0))
    assert info.crop_size == 256 and info.reduce_zero_label is False and info.label_colors is None
    assert get_dataset_info(tmp_path / "region.yaml") == info
    assert get_dataset_info(str(write(tmp_path, GOOD_YAML, "other.yml"))) == info


def test_yaml_defaults_and_colour_masks(tmp_path):
    text = GOOD_YAML.replace("crop_size: 256\n", "") + (
        "label_colors: [[1, 1, 1], [2, 2, 2], [3, 3, 3]]\nignore_colors: [[0, 0, 0]]\n"
    )
    info = load_dataset_yaml(write(tmp_path, text))
    assert info.crop_size == 512
    assert info.label_colors == ((1, 1, 1), (2, 2, 2), (3, 3, 3)) and info.ignore_colors == ((0, 0, 0),)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace("name: my_city\n", ""), "name"),
        (lambda t: t.replace("classes: [building, road, tree]\n", ""), "classes"),
        (lambda t: t.replace("palette: [[255, 0, 0], [128, 128, 128], [0, 200, 0]]\n", ""), "palette"),
        (lambda t: t.split("concepts:")[0] + "palette: [[255, 0, 0], [128, 128, 128], [0, 200, 0]]\n", "concepts"),
        (lambda t: t.replace(", [0, 200, 0]]", "]"), "palette"),
        (lambda t: t.replace("[0, 200, 0]", "[0, 256, 0]"), "palette[2]"),
        (lambda t: t.replace("[0, 200, 0]", "[0, 200]"), "palette[2]"),
        (lambda t: t.replace("tree]", "road]"), "classes"),
        (lambda t: t.replace("road: [road, street]", "raod: [street]"), "concepts.raod"),
        (lambda t: t.replace("crop_size: 256", "crop_size: 0"), "crop_size"),
        (lambda t: t + "reduce_zero_label: maybe\n", "reduce_zero_label"),
        (lambda t: t + "label_colours: [[1, 1, 1]]\n", "label_colours"),
        (lambda t: t + "label_colors: [[1, 1, 1]]\n", "label_colors"),
        (lambda t: t + "label_colors: [[1, 1, 1], [2, 2, 2], [1, 1, 1]]\n", "label_colors"),
    ],
)
def test_yaml_errors_name_file_and_field(tmp_path, edit, field):
    path = write(tmp_path, edit(GOOD_YAML))
    with pytest.raises(Co2SInputError) as e:
        load_dataset_yaml(path)
    assert str(path) in str(e.value) and f"'{field}'" in str(e.value)


@pytest.mark.parametrize("text", ["classes: [a\n", "- just\n- a list\n"])
def test_yaml_not_a_dataset(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(Co2SInputError, match="region.yaml"):
        load_dataset_yaml(path)


def test_yaml_missing_file(tmp_path):
    with pytest.raises(Co2SInputError, match="nope.yaml"):
        get_dataset_info(tmp_path / "nope.yaml")


def test_shipped_example_yaml_loads():
    import co2s.train.data as data

    info = load_dataset_yaml(Path(data.__file__).parent / "example_region.yaml")
    assert info.name == "example_region" and info.num_classes == 5
    assert info.concepts[0] == ("building", "house", "rooftop", "warehouse")
