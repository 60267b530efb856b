"""Datasets on disk in the reference layout (docs/method.md §11).

    <root>/images/..., <root>/labels/...
    <root>/splits/<dataset>/<split>/labeled.txt      e.g. split = "1_8"
    <root>/splits/<dataset>/<split>/unlabeled.txt
    <root>/splits/<dataset>/val.txt

Each split-file line is "images/<name> labels/<name>", relative to the root; unlabeled lines may
omit the label (it is ignored there anyway).
"""

from __future__ import annotations

from pathlib import Path

from co2s.errors import Co2SInputError

from .base import Sample, SegmentationDataset
from .io import read_image, read_pair
from .registry import DatasetInfo, get_dataset_info

PARTS = ("labeled", "unlabeled", "val")


class SplitDataset(SegmentationDataset):
    """The samples listed in one split file. Checks on construction that every listed file exists."""

    def __init__(self, root: str | Path, info: DatasetInfo, list_file: str | Path, with_labels: bool = True):
        self.root = Path(root)
        self.info = info
        self.list_file = Path(list_file)
        self.with_labels = with_labels
        self.source = str(self.list_file)
        self._image_names, self._label_names = self._parse()

    def _parse(self) -> tuple[list[str], list[str | None]]:
        try:
            lines = self.list_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise Co2SInputError(f"{self.list_file}: cannot read split file ({e.strerror or e})") from None
        image_names, label_names, missing = [], [], []
        for line_no, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2 or (self.with_labels and len(fields) != 2):
                expected = "'images/<name> labels/<name>'" + ("" if self.with_labels else " or 'images/<name>'")
                raise Co2SInputError(f"{self.list_file}, line {line_no}: expected {expected}, got {line.strip()!r}")
            image_name = fields[0]
            label_name = fields[1] if self.with_labels else None
            for name in (image_name, label_name):
                if name is not None and not (self.root / name).is_file():
                    missing.append(f"line {line_no}: {name}")
            image_names.append(image_name)
            label_names.append(label_name)
        if missing:
            shown = "; ".join(missing[:5]) + (f"; ... and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise Co2SInputError(
                f"{self.list_file}: {len(missing)} listed file(s) not found under the data root {self.root}: {shown}"
            )
        if not image_names:
            raise Co2SInputError(f"{self.list_file}: split file lists no samples")
        return image_names, label_names

    def __len__(self) -> int:
        return len(self._image_names)

    def __getitem__(self, index: int) -> Sample:
        image_path = self.root / self._image_names[index]
        if not self.with_labels:
            return read_image(image_path), None
        return read_pair(image_path, self.root / self._label_names[index], self.info)

    @property
    def names(self) -> list[str]:
        """Image paths as written in the split file (relative to the root)."""
        return list(self._image_names)


def split_file(root: str | Path, dataset: str, split: str, part: str) -> Path:
    """Where the reference layout keeps the list for one part of a split."""
    if part not in PARTS:
        raise Co2SInputError(f"unknown split part {part!r}; expected one of {', '.join(PARTS)}")
    base = Path(root) / "splits" / dataset
    return base / "val.txt" if part == "val" else base / split / f"{part}.txt"


def open_split(info_or_name: DatasetInfo | str | Path, root: str | Path, split: str, part: str) -> SplitDataset:
    """One part ("labeled", "unlabeled" or "val") of a reference-layout split; `split` (e.g. "1_8") is
    ignored for "val". Unlabeled parts return no labels."""
    info = info_or_name if isinstance(info_or_name, DatasetInfo) else get_dataset_info(info_or_name)
    root = Path(root)
    if not root.is_dir():
        raise Co2SInputError(f"data root {root} for dataset {info.name!r} does not exist or is not a folder")
    list_file = split_file(root, info.name, split, part)
    if not list_file.is_file():
        splits_dir = root / "splits" / info.name
        available = sorted(p.name for p in splits_dir.iterdir() if p.is_dir()) if splits_dir.is_dir() else []
        raise Co2SInputError(
            f"split file {list_file} not found; splits available under {splits_dir}: {', '.join(available) or 'none'}"
        )
    return SplitDataset(root, info, list_file, with_labels=part != "unlabeled")
