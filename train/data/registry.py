"""Dataset descriptions: classes, palettes, CLIP concept lists and label encodings (docs/method.md §3.1, §11).

Every dataset, built-in or a user's new region, is one YAML file read by `load_dataset_yaml`; the built-in ones are
`datasets/<name>.yaml` next to this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from co2s.bundle.formats import IGNORE_INDEX
from co2s.errors import Co2SInputError

Color = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetInfo:
    """What co2s needs to know about a dataset. Invalid combinations raise Co2SInputError.

    `concepts[k]` is the concept set C_k of class k; its first item is the class name itself.
    `label_colors` is set for colour-coded RGB masks (colour of class k at index k); `ignore_colors`
    are mask colours that mean "no label" and decode to IGNORE_INDEX.
    """

    name: str
    classes: tuple[str, ...]
    palette: tuple[Color, ...]
    concepts: tuple[tuple[str, ...], ...]
    reduce_zero_label: bool = False
    crop_size: int = 512
    label_colors: tuple[Color, ...] | None = None
    ignore_colors: tuple[Color, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __post_init__(self) -> None:
        def fail(field: str, problem: str) -> None:
            raise Co2SInputError(f"dataset {self.name!r}: field '{field}': {problem}")

        if not isinstance(self.name, str) or not self.name or "/" in self.name or "\\" in self.name:
            fail("name", f"expected a non-empty name without slashes, got {self.name!r}")
        n = len(self.classes)
        if not 1 <= n < IGNORE_INDEX:
            fail("classes", f"expected 1..{IGNORE_INDEX - 1} classes, got {n}")
        for k, cls in enumerate(self.classes):
            if not isinstance(cls, str) or not cls:
                fail(f"classes[{k}]", f"expected a non-empty string, got {cls!r}")
        duplicates = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if duplicates:
            fail("classes", f"duplicate class name(s) {duplicates}")
        _check_colors(self.palette, "palette", n, fail)
        if len(self.concepts) != n:
            fail("concepts", f"expected one concept list per class ({n}), got {len(self.concepts)}")
        for k, (cls, concept_list) in enumerate(zip(self.classes, self.concepts)):
            if not concept_list or concept_list[0] != cls:
                fail(f"concepts[{k}]", f"must start with the class name {cls!r}, got {list(concept_list)}")
            if not all(isinstance(c, str) and c for c in concept_list):
                fail(f"concepts[{k}]", f"expected non-empty strings, got {list(concept_list)}")
        if not isinstance(self.reduce_zero_label, bool):
            fail("reduce_zero_label", f"expected true or false, got {self.reduce_zero_label!r}")
        if isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int) or self.crop_size < 1:
            fail("crop_size", f"expected a positive integer, got {self.crop_size!r}")
        if self.label_colors is None:
            if self.ignore_colors:
                fail("ignore_colors", "only meaningful together with label_colors (colour-coded masks)")
            return
        if self.reduce_zero_label:
            fail("reduce_zero_label", "applies to index labels; colour-coded masks (label_colors) use ignore_colors")
        _check_colors(self.label_colors, "label_colors", n, fail)
        _check_colors(self.ignore_colors, "ignore_colors", None, fail)
        every_color = list(self.label_colors) + list(self.ignore_colors)
        repeated = sorted({c for c in every_color if every_color.count(c) > 1})
        if repeated:
            fail("label_colors", f"colour(s) {repeated} used more than once (label_colors + ignore_colors)")


def _check_colors(colors, field: str, expected_count: int | None, fail) -> None:
    if expected_count is not None and len(colors) != expected_count:
        fail(field, f"expected {expected_count} colours (one per class), got {len(colors)}")
    for k, color in enumerate(colors):
        valid = (
            isinstance(color, tuple)
            and len(color) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)
        )
        if not valid:
            fail(f"{field}[{k}]", f"expected [r, g, b] with integers 0..255, got {color!r}")


# The built-in datasets are data files of the same format as a user's, shipped with the package.
BUILTIN_DIR = Path(__file__).parent / "datasets"


def list_datasets() -> list[str]:
    """Names accepted by get_dataset_info (besides paths to dataset YAML files)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def get_dataset_info(name: str | Path) -> DatasetInfo:
    """A built-in dataset by name, or a user-defined one from a .yaml/.yml file."""
    if str(name).lower().endswith((".yaml", ".yml")):
        return load_dataset_yaml(name)
    if str(name).lower() not in list_datasets():
        raise Co2SInputError(
            f"unknown dataset {str(name)!r}; known datasets: {', '.join(list_datasets())}, "
            "or the path of a dataset .yaml file"
        )
    return _builtin(str(name).lower())


@cache
def _builtin(name: str) -> DatasetInfo:
    info = load_dataset_yaml(BUILTIN_DIR / f"{name}.yaml")
    if info.name != name:  # the file name is what users type, the field is what checkpoints record
        raise Co2SInputError(f"{BUILTIN_DIR / name}.yaml: field 'name' is {info.name!r}, expected {name!r}")
    return info


_YAML_FIELDS = (
    "name",
    "classes",
    "concepts",
    "palette",
    "reduce_zero_label",
    "crop_size",
    "label_colors",
    "ignore_colors",
)


def load_dataset_yaml(path: str | Path) -> DatasetInfo:
    """Read a user-defined dataset (a new region). Example::

        name: my_city
        classes: [building, road, tree]
        concepts: {building: [house, roof], road: [street], tree: [park tree]}
        palette: [[255, 0, 0], [128, 128, 128], [0, 200, 0]]
        reduce_zero_label: false   # optional; true when labels store classes as 1..N with 0 = no data
        crop_size: 512             # optional
        label_colors: [[...], ...] # optional: masks are RGB colour codes, class k has colour k
        ignore_colors: [[0, 0, 0]] # optional: mask colours that mean "no label"

    The class name is prepended to its concept list when missing; a class absent from `concepts` gets
    only its name. Every mistake raises Co2SInputError naming the file and the field.
    """
    import yaml

    path = Path(path)

    def fail(field: str, problem: str) -> None:
        raise Co2SInputError(f"{path}: field '{field}': {problem}")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise Co2SInputError(f"{path}: cannot read dataset file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise Co2SInputError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise Co2SInputError(f"{path}: expected a mapping with fields {', '.join(_YAML_FIELDS)}")
    unknown = sorted(set(data) - set(_YAML_FIELDS))
    if unknown:
        fail(unknown[0], f"unknown field; expected some of {', '.join(_YAML_FIELDS)}")
    for field in ("name", "classes", "concepts", "palette"):
        if data.get(field) is None:
            fail(field, "missing (required)")

    classes = data["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        fail("classes", f"expected a list of class names, got {classes!r}")
    concepts = data["concepts"]
    if not isinstance(concepts, dict):
        fail("concepts", f"expected a mapping class -> list of concepts, got {concepts!r}")
    for cls, items in concepts.items():
        if cls not in classes:
            fail(f"concepts.{cls}", f"not one of the classes {classes}")
        if not isinstance(items, list) or not all(isinstance(c, str) and c for c in items):
            fail(f"concepts.{cls}", f"expected a list of non-empty strings, got {items!r}")
    concept_lists = []
    for cls in classes:
        items = [c for c in concepts.get(cls) or [] if c != cls]
        concept_lists.append((cls, *items))

    def colors(field: str):
        value = data.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(c, list) for c in value):
            fail(field, f"expected a list of [r, g, b] colours, got {value!r}")
        return tuple(tuple(c) for c in value)

    try:
        return DatasetInfo(
            name=str(data["name"]),
            classes=tuple(classes),
            palette=colors("palette"),
            concepts=tuple(concept_lists),
            reduce_zero_label=data.get("reduce_zero_label", False),
            crop_size=data.get("crop_size", 512),
            label_colors=colors("label_colors"),
            ignore_colors=colors("ignore_colors") or (),
        )
    except Co2SInputError as e:
        raise Co2SInputError(f"{path}: {e}") from None
