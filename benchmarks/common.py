"""What the benchmark scripts share: writing one result set as JSON, CSV, Markdown and a PNG chart."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path


def write_outputs(
    out: Path, name: str, r: dict, columns: Sequence[str], markdown: Callable[[dict], str], chart: Callable
) -> None:
    """`out/<name>.{json,csv,md,png}` from the result dict `r` (its "rows" become the CSV)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(r, indent=2, default=str))
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for row in r["rows"]:
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    (out / f"{name}.md").write_text(markdown(r))
    chart(r, out / f"{name}.png")
