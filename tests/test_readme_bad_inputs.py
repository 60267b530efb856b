"""The README's bad-input table is true: every row is run here and its exit status and message are checked.

Each row of the table between the `bad-input-table` markers in README.md names a CLI, what was wrong and what the
user sees. CASES below holds, for the same (CLI, what was wrong) key, how to produce that situation. The test fails
when a row has no case, a case has no row, or the CLI's exit status or message differs from the table's.
In a message cell, `…` stands for any text (paths, numbers that depend on the machine).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from _export_helpers import trained_tiny_checkpoint
from _train_helpers import folder_dataset
from PIL import Image
from runtime_fakes import damaged_bundle, make_bundle, png_bytes, rgb, truncated_png

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"

pytestmark = pytest.mark.timeout(600)


# ------------------------------------------------------------------------------------------------ the CLIs, in-process
def _exit_and_stderr(call, capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        call()
    return int(e.value.code or 0), capsys.readouterr().err


def train(argv, capsys, monkeypatch):
    from co2s.train.cli import main

    monkeypatch.setattr(sys, "argv", ["co2s-train", *map(str, argv)])
    return _exit_and_stderr(main, capsys)


def export(argv, capsys, monkeypatch):
    from co2s.export.cli import main

    return _exit_and_stderr(lambda: main([str(a) for a in argv]), capsys)


def infer(argv, capsys, monkeypatch):
    from co2s.runtime.cli import infer_main

    return _exit_and_stderr(lambda: infer_main([str(a) for a in argv] + ["-q"]), capsys)


def bench(argv, capsys, monkeypatch):
    from co2s.runtime.cli import bench_main

    return _exit_and_stderr(lambda: bench_main([str(a) for a in argv]), capsys)


CLIS = {"co2s-train": train, "co2s-export": export, "co2s-infer": infer, "co2s-bench": bench}


# ------------------------------------------------------------------------------------------------ inputs
def fit_args(root: Path, out: Path) -> list:
    return [
        "fit",
        "--dataset",
        "mer",
        "--data-root",
        root,
        "--out",
        out,
        "--preset",
        "tiny",
        "--iters",
        "1",
        "--crop",
        "64",
        "--batch-size",
        "1",
    ]


FIVE_OTHER_CLASSES = (
    "name: five\nclasses: [a, b, c, d, e]\nconcepts: {}\npalette: [[0,0,0],[1,1,1],[2,2,2],[3,3,3],[4,4,4]]\n"
)


def one_image(tmp: Path, name="scene.png", write=None) -> Path:
    p = tmp / name
    write(p) if write else Image.fromarray(rgb()).save(p)
    return p


def small_bundle(tmp: Path) -> Path:
    return make_bundle(tmp / "bundle", tile=32)


def infer_one(tmp: Path, write=None, extra=()) -> list:
    return [small_bundle(tmp), one_image(tmp, write=write), "--out", tmp / "out", *extra]


def mixed_folder(tmp: Path) -> list:
    src = tmp / "in"
    src.mkdir()
    Image.fromarray(rgb(seed=1)).save(src / "a_good.png")
    truncated_png(src / "b_truncated.png")
    (src / "c_text.jpg").write_text("not a jpeg")
    return [small_bundle(tmp), src, "--out", tmp / "out"]


# (CLI, what was wrong) -> tmp_path -> argv. The keys are the README table's first two columns, verbatim.
CASES = {
    # co2s-train
    ("co2s-train", "`--data-root` does not exist"): lambda t: [
        "fit",
        "--dataset",
        "mer",
        "--data-root",
        t / "nowhere",
        "--out",
        t / "run",
    ],
    ("co2s-train", "a split file lists an image that is not there"): lambda t: fit_args(
        folder_dataset(t / "d", labeled_lines=["images/0.png labels/0.png", "images/gone.png labels/gone.png"]),
        t / "run",
    ),
    ("co2s-train", "a label value outside the class range (not 255)"): lambda t: fit_args(
        folder_dataset(t / "d", label_value=12), t / "run"
    ),
    ("co2s-train", "image and label of different sizes"): lambda t: fit_args(
        folder_dataset(t / "d", label_size=(32, 40)), t / "run"
    ),
    ("co2s-train", "an empty labelled split"): lambda t: fit_args(folder_dataset(t / "d", labeled_lines=[]), t / "run"),
    ("co2s-train", "an unknown dataset name"): lambda t: ["fit", "--dataset", "atlantis", "--out", t / "run"],
    ("co2s-train", "`--crop` not a multiple of 16"): lambda t: (
        fit_args(folder_dataset(t / "d"), t / "run") + ["--crop", "100"]
    ),
    ("co2s-train", "`--resume` with no `last.pt` in `--out`"): lambda t: (
        fit_args(folder_dataset(t / "d"), t / "run") + ["--resume"]
    ),
    ("co2s-train", "`--clip-weights` file missing"): lambda t: (
        fit_args(folder_dataset(t / "d"), t / "run") + ["--preset", "paper", "--clip-weights", t / "ViT-B-16.pt"]
    ),
    ("co2s-train", "`evaluate` a checkpoint of another class count"): lambda t: [
        "evaluate",
        trained_tiny_checkpoint(),
        "--dataset",
        "mer",
        "--data-root",
        folder_dataset(t / "d"),
    ],
    ("co2s-train", "`evaluate` a file that is not a checkpoint"): lambda t: [
        "evaluate",
        one_image(t, "model.pt", lambda p: p.write_text("hello")),
        "--dataset",
        "synthetic",
    ],
    ("co2s-train", "`evaluate` a checkpoint on a dataset with other classes"): lambda t: [
        "evaluate",
        trained_tiny_checkpoint(),
        "--dataset",
        one_image(t, "five.yaml", lambda p: p.write_text(FIVE_OTHER_CLASSES)),
        "--data-root",
        t,
    ],
    ("co2s-train", "`evaluate --split val` (the old name of `--part`)"): lambda t: [
        "evaluate",
        trained_tiny_checkpoint(),
        "--dataset",
        "synthetic",
        "--split",
        "val",
    ],
    ("co2s-train", "`--batch-size 0`"): lambda t: fit_args(folder_dataset(t / "d"), t / "run") + ["--batch-size", "0"],
    # co2s-export
    ("co2s-export", "`--checkpoint` missing"): lambda t: ["--checkpoint", t / "nope.pt", "--out", t / "b"],
    ("co2s-export", "`--checkpoint` is not a checkpoint"): lambda t: [
        "--checkpoint",
        one_image(t, "bad.pt", lambda p: p.write_bytes(b"not a checkpoint")),
        "--out",
        t / "b",
    ],
    ("co2s-export", "`--dataset` with another class count than the checkpoint"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--dataset",
        "potsdam",
        "--out",
        t / "b",
    ],
    ("co2s-export", "`--tile` not a multiple of 16"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--tile",
        "100",
        "--out",
        t / "b",
    ],
    ("co2s-export", "`--calib-data` folder without images"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--calib-data",
        (t / "calib").mkdir() or t / "calib",
        "--out",
        t / "b",
    ],
    ("co2s-export", "`--out` exists and is not empty, no `--force`"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--out",
        one_image(t, "keep.txt", lambda p: p.write_text("user data")).parent,
    ],
    ("co2s-export", "`--precisions` (the old name of `--precision`)"): lambda t: [
        "--untrained",
        "--precisions",
        "fp32",
        "--out",
        t / "b",
    ],
    ("co2s-export", "`--engine fp8`"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--engine",
        "fp8",
        "--out",
        t / "b",
    ],
    # co2s-infer
    ("co2s-infer", "an input that does not exist"): lambda t: [small_bundle(t), t / "nope.png", "--out", t / "out"],
    ("co2s-infer", "a text file named `.png`"): lambda t: infer_one(
        t, lambda p: p.write_text("hello, I am a text file")
    ),
    ("co2s-infer", "an empty (0-byte) file"): lambda t: infer_one(t, lambda p: p.write_bytes(b"")),
    ("co2s-infer", "a truncated PNG"): lambda t: infer_one(t, truncated_png),
    ("co2s-infer", "a PNG header claiming 60000 × 60000 pixels"): lambda t: infer_one(
        t, lambda p: p.write_bytes(png_bytes(60000, 60000))
    ),
    ("co2s-infer", "a 1-band image"): lambda t: infer_one(t, lambda p: Image.fromarray(rgb()[..., 0]).save(p)),
    ("co2s-infer", "a 16-bit image without `--stretch`"): lambda t: infer_one(
        t, lambda p: Image.fromarray(rgb()[..., 0].astype(np.uint16) * 200).save(p), ["--bands", "1"]
    ),
    ("co2s-infer", "`--tile-overlap` more than half the tile"): lambda t: infer_one(t, extra=["--tile-overlap", "17"]),
    ("co2s-infer", "`--tile-overlap` pixels that are not whole"): lambda t: infer_one(
        t, extra=["--tile-overlap", "1.5"]
    ),
    ("co2s-infer", "`--batch 0`"): lambda t: infer_one(t, extra=["--batch", "0"]),
    ("co2s-infer", "`--precision` none of which the bundle has"): lambda t: infer_one(
        t, extra=["--precision", "fp16,int8"]
    ),
    ("co2s-infer", "a folder with some bad files"): mixed_folder,
    ("co2s-infer", "a folder holding `x.jpg` and `x.png`"): lambda t: [
        small_bundle(t),
        one_image(
            one_image(t / "in", "x.png", lambda p: p.parent.mkdir() or Image.fromarray(rgb()).save(p)).parent, "x.jpg"
        ).parent,
        "--out",
        t / "out",
    ],
    ("co2s-infer", "an RGBA PNG (alpha = nodata)"): lambda t: infer_one(
        t, lambda p: Image.fromarray(np.dstack([rgb(), np.full(rgb().shape[:2], 255, np.uint8)]), "RGBA").save(p)
    ),
    ("co2s-infer", "`--min-area` negative"): lambda t: infer_one(t, extra=["--vector", "gpkg", "--min-area", "-5"]),
    ("co2s-infer", "`--simplify` negative"): lambda t: infer_one(t, extra=["--vector", "gpkg", "--simplify", "-1"]),
    ("co2s-infer", "`--min-area` without `--vector`"): lambda t: infer_one(t, extra=["--min-area", "5"]),
    ("co2s-infer", "`--min-area` in m² on a raster without a CRS"): lambda t: infer_one(
        t, extra=["--vector", "gpkg", "--min-area", "50m2"]
    ),
    ("co2s-infer", "a bundle whose model file is missing"): lambda t: [
        damaged_bundle(t / "bundle", "missing"),
        one_image(t),
        "--out",
        t / "out",
    ],
    ("co2s-infer", "a bundle whose model file was altered"): lambda t: [
        damaged_bundle(t / "bundle", "checksum"),
        one_image(t),
        "--out",
        t / "out",
    ],
    ("co2s-infer", "a bundle folder without a manifest"): lambda t: [
        (t / "empty").mkdir() or t / "empty",
        one_image(t),
        "--out",
        t / "out",
    ],
    # co2s-bench
    ("co2s-bench", "a bundle folder without a manifest"): lambda t: [(t / "empty").mkdir() or t / "empty"],
    ("co2s-bench", "`--iters` (the old name of `--calls`)"): lambda t: [small_bundle(t), "--iters", "3"],
}


# ------------------------------------------------------------------------------------------------ the table
def table_rows() -> list[tuple[str, str, int, str]]:
    text = README.read_text()
    if START not in text or END not in text:
        return []  # test_every_row_has_a_case_and_every_case_a_row says so
    rows = []
    for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("CLI", "") or set(cells[0]) <= set("-: "):
            continue
        cli, what, code, seen = cells
        rows.append((cli.strip("`"), what, int(code), seen))
    return rows


def message_pattern(cell: str) -> re.Pattern:
    """The table's message (backticked parts) as a regex: `…` matches anything, whitespace is flexible."""
    parts = re.findall(r"`([^`]+)`", cell)
    assert parts, f"README bad-input table: no `message` in {cell!r}"
    pieces = []
    for part in parts:
        chunks = [re.escape(c) for c in re.split(r"\s*…\s*", part)]
        pieces.append(r".*?".join(c.replace(r"\ ", r"\s+") for c in chunks))
    return re.compile(r".*?".join(pieces), re.S)


def test_every_row_has_a_case_and_every_case_a_row():
    assert START in README.read_text() and END in README.read_text(), (
        f"{README}: the bad-input table markers are missing"
    )
    keys = {(cli, what) for cli, what, _, _ in table_rows()}
    assert keys - set(CASES) == set(), "rows without a case"
    assert set(CASES) - keys == set(), "cases without a README row"


@pytest.mark.parametrize("row", table_rows(), ids=lambda r: f"{r[0]}: {r[1]}")
def test_readme_row_is_what_the_user_sees(row, tmp_path, capsys, monkeypatch):
    cli, what, code, seen = row
    argv = CASES[(cli, what)](tmp_path)
    got_code, err = CLIS[cli](argv, capsys, monkeypatch)
    flat = " ".join(err.split())
    assert got_code == code, f"{cli} {what}: exit {got_code}, README says {code}\n{err}"
    assert message_pattern(seen).search(flat), f"{cli} {what}: README says {seen}\nthe CLI printed:\n{err}"
    assert "Traceback" not in err


def test_fault_table_names_tests_that_exist():
    """The faults table (after the markers) cites the tests that prove each row; they must exist."""
    text = README.read_text().split(END, 1)[-1].split("\n## ", 1)[0]
    cited = set(re.findall(r"`(test_\w+)`", text))
    assert len(cited) >= 10, f"{README}: the faults table cites {len(cited)} tests"
    here = Path(__file__).parent
    defined = {
        m
        for f in ("test_resource_faults.py", "test_kill_safety.py")
        for m in re.findall(r"^def (test_\w+)", (here / f).read_text(), re.M)
    }
    assert cited - defined == set(), "README cites tests that do not exist"
