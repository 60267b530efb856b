"""The interface every co2s dataset offers, and whole-dataset validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from co2s.cli import progress_bar
from co2s.errors import Co2SInputError

from .registry import DatasetInfo

Sample = tuple[np.ndarray, np.ndarray | None]


class SegmentationDataset:
    """Map-style dataset: `ds[i] -> (image uint8 [H, W, 3], label uint8 [H, W] or None)`.

    Subclasses set `info` (DatasetInfo), `with_labels`, `source` (where the items come from, for
    messages) and provide `__len__`, `__getitem__` and `names` (one string per item).
    """

    info: DatasetInfo
    with_labels: bool
    source: str

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def validate(self, progress: bool = True) -> None:
        """Read every item once, so bad files fail before training starts rather than mid-run."""
        check_all(range(len(self)), self.__getitem__, progress, self.source)


def check_all(items: Iterable, read: Callable, progress: bool, source: str) -> None:
    """Call `read` on every item and raise one Co2SInputError listing the first failures."""
    items = list(items)
    errors = []
    for item in progress_bar(items, desc=f"checking {source}", enabled=progress):
        try:
            read(item)
        except Co2SInputError as e:
            errors.append(str(e))
    if errors:
        shown = "\n  ".join(errors[:5])
        more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise Co2SInputError(f"{source}: {len(errors)} of {len(items)} samples failed to load:\n  {shown}{more}")
