"""Dataset descriptions: classes, palettes, CLIP concept lists and label encodings (spec 2.3, 4.2)."""

from __future__ import annotations

from dataclasses import dataclass
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


def _info(name, concepts, palette, *, reduce_zero_label, crop_size, **colors) -> DatasetInfo:
    """Built-in entry from concept lists (class name first) and a palette."""
    return DatasetInfo(
        name=name,
        classes=tuple(c[0] for c in concepts),
        palette=tuple(palette),
        concepts=tuple(tuple(c) for c in concepts),
        reduce_zero_label=reduce_zero_label,
        crop_size=crop_size,
        **colors,
    )


_MARS_CONCEPTS = (
    ("Martian Soil", "mars soil", "red soil", "martian regolith", "planetary soil", "extraterrestrial soil"),
    ("Sands", "martian sand", "fine grains", "loose sand", "desert sand", "silica sand"),
    ("Gravel", "martian gravel", "coarse gravel", "pebbles", "stone fragments", "rocky gravel"),
    ("Bedrock", "martian bedrock", "solid rock", "bedrock layer", "parent rock", "foundation rock"),
    ("Rocks", "martian rocks", "boulders", "stone blocks", "rock formations", "large rocks"),
    ("Tracks", "rover tracks", "vehicle tracks", "wheel tracks", "trail marks", "path imprints"),
    ("Shadows", "martian shadows", "rock shadows", "shadow regions", "dark areas", "sun shadows"),
    ("Unknown", "unidentified object", "unknown material", "ambiguous feature", "unclassified", "mysterious object"),
    ("Background", "martian background", "scene background", "context area", "surroundings", "environment background"),
)
_MARS_PALETTE = (
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
)

# Dubai mask colours (shared/data/dubai_aerial/README.txt; NOT the colours in classes.original.json).
_DUBAI_COLORS = ((60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41), (155, 155, 155))

_BUILTIN = {
    info.name: info
    for info in (
        _info(
            "whdld",
            (
                (
                    "building",
                    "residential building",
                    "commercial building",
                    "industrial building",
                    "high-rise",
                    "low-rise",
                ),
                ("road", "highway", "arterial road", "residential road", "asphalt road", "concrete road"),
                ("pavement", "sidewalk", "pedestrian path", "concrete pavement", "brick pavement", "stone pavement"),
                ("vegetation", "tree", "shrub", "grassland", "farmland", "vegetation patch"),
                ("bare soil", "unvegetated land", "soil exposure", "construction site", "quarry", "desert area"),
                ("water", "lake", "river", "pond", "water body", "water surface", "reservoir"),
            ),
            ((255, 0, 0), (255, 255, 0), (192, 192, 0), (0, 255, 0), (128, 128, 128), (0, 0, 255)),
            reduce_zero_label=True,
            crop_size=256,
        ),
        _info(
            "loveda",
            (
                ("background", "undeveloped land", "open space", "background area", "unclassified region"),
                (
                    "building",
                    "residential building",
                    "commercial building",
                    "industrial building",
                    "public building",
                    "high-rise",
                ),
                ("road", "highway", "urban road", "rural road", "asphalt road", "concrete road"),
                ("water", "lake", "river", "pond", "reservoir", "water body"),
                ("barren", "bare soil", "desert", "construction site", "mining area", "exposed rock"),
                ("forest", "deciduous forest", "evergreen forest", "mixed forest", "woodland", "tree canopy"),
                ("agriculture", "farmland", "cropland", "orchard", "vineyard", "greenhouse"),
            ),
            ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128)),
            reduce_zero_label=True,
            crop_size=512,
        ),
        _info(
            "potsdam",
            (
                ("impervious_surface", "asphalt", "concrete", "pavement", "roof", "sidewalk"),
                ("building", "residential building", "commercial building", "church", "factory", "historical building"),
                ("low_vegetation", "grass", "lawn", "meadow", "pasture", "flower bed"),
                ("tree", "deciduous tree", "evergreen tree", "tree row", "park tree", "forest edge"),
                ("car", "passenger car", "truck", "van", "bus", "parked vehicle"),
                ("clutter", "fence", "wall", "railway", "construction site", "unclassified object"),
            ),
            ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)),
            reduce_zero_label=True,
            crop_size=512,
        ),
        _info(
            "gid",
            (
                (
                    "industrial_land",
                    "factory area",
                    "industrial park",
                    "workshop zone",
                    "warehouse area",
                    "industrial facility",
                ),
                (
                    "urban_residential",
                    "apartment area",
                    "high-density housing",
                    "urban housing",
                    "residential block",
                    "city community",
                ),
                (
                    "rural_residential",
                    "village housing",
                    "countryside settlement",
                    "rural homestead",
                    "low-rise rural house",
                    "scattered village",
                ),
                ("traffic_land", "road network", "highway", "urban road", "transport corridor", "parking and driveway"),
                (
                    "paddy_field",
                    "rice field",
                    "paddy rice farmland",
                    "flooded field",
                    "irrigated paddy",
                    "cultivated paddy",
                ),
                (
                    "irrigated_land",
                    "irrigated farmland",
                    "canal-irrigated field",
                    "well-irrigated cropland",
                    "watered field",
                    "intensive irrigated land",
                ),
                (
                    "dry_cropland",
                    "rainfed cropland",
                    "dry farming field",
                    "non-irrigated farmland",
                    "upland crop field",
                    "seasonal cropland",
                ),
                (
                    "garden_plot",
                    "orchard",
                    "vegetable garden",
                    "economic crop field",
                    "plantation",
                    "horticultural land",
                ),
                (
                    "arbor_woodland",
                    "forest land",
                    "tree plantation",
                    "tall woodland",
                    "closed canopy forest",
                    "tree-covered area",
                ),
                ("shrub_land", "bushland", "scrub vegetation", "low shrub area", "shrub-covered slope", "sparse shrub"),
                (
                    "natural_grassland",
                    "native grassland",
                    "pasture",
                    "meadow",
                    "natural herbaceous area",
                    "grazing land",
                ),
                (
                    "artificial_grassland",
                    "man-made grassland",
                    "artificial lawn",
                    "urban green grass",
                    "reclaimed grassland",
                    "managed grass field",
                ),
                ("river", "river channel", "stream", "watercourse", "flowing water", "river system"),
                ("lake", "water lake", "inland lake", "large water body", "open water surface", "natural lake"),
                ("pond", "fish pond", "small water pond", "artificial pond", "storage pond", "still water body"),
            ),
            (
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
            ),
            reduce_zero_label=False,
            crop_size=512,
        ),
        _info("mer", _MARS_CONCEPTS, _MARS_PALETTE, reduce_zero_label=False, crop_size=512),
        _info("msl", _MARS_CONCEPTS, _MARS_PALETTE, reduce_zero_label=False, crop_size=512),
        _info(
            "dubai",
            (
                ("Building", "residential building", "commercial building", "villa", "tower", "rooftop"),
                ("Land", "unpaved area", "desert sand", "bare ground", "open land", "construction site"),
                ("Road", "highway", "street", "asphalt road", "roundabout", "parking lot"),
                ("Vegetation", "tree", "palm tree", "grass", "park", "garden"),
                ("Water", "sea", "coastal water", "canal", "lagoon", "swimming pool"),
                (
                    "Unlabeled",
                    "unlabeled area",
                    "unknown object",
                    "miscellaneous structure",
                    "clutter",
                    "unclassified region",
                ),
            ),
            _DUBAI_COLORS,
            reduce_zero_label=False,
            crop_size=256,
            label_colors=_DUBAI_COLORS,
            ignore_colors=((0, 0, 0),),  # unannotated pixels (README: 0.56 %, mostly Tile_8 part 3)
        ),
        _info(
            "synthetic",
            (
                ("bare_soil", "bare soil", "sand", "dry earth", "open ground"),
                ("vegetation", "tree", "grass", "shrub", "forest"),
                ("water", "lake", "river", "pond", "water body"),
                ("building", "house", "roof", "residential building", "warehouse"),
                ("road", "street", "asphalt road", "highway", "lane"),
            ),
            ((180, 150, 110), (40, 160, 40), (30, 90, 220), (220, 40, 40), (250, 250, 80)),
            reduce_zero_label=False,
            crop_size=128,
        ),
    )
}


def list_datasets() -> list[str]:
    """Names accepted by get_dataset_info (besides paths to dataset YAML files)."""
    return sorted(_BUILTIN)


def get_dataset_info(name: str | Path) -> DatasetInfo:
    """A built-in dataset by name, or a user-defined one from a .yaml/.yml file."""
    if str(name).lower().endswith((".yaml", ".yml")):
        return load_dataset_yaml(name)
    try:
        return _BUILTIN[str(name).lower()]
    except KeyError:
        raise Co2SInputError(
            f"unknown dataset {str(name)!r}; known datasets: {', '.join(list_datasets())}, "
            "or the path of a dataset .yaml file"
        ) from None


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
