"""The README's bad-input table is true: every row is run here and its exit status and message are checked.

Each row of the table between the `bad-input-table` markers in README.md names a CLI, what was wrong and what the
user sees. CASES below holds, for the same (CLI, what was wrong) key, how to produce that situation. The test fails
when a row has no case, a case has no row, or the CLI's exit status or message differs from the table's.
In a message cell, `…` stands for any text (paths, numbers that depend on the machine).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _export_helpers import trained_tiny_checkpoint
from _train_helpers import folder_dataset
from conftest import REPO_ROOT, TESTS_ROOT
from fakes.runtime import damaged_bundle, make_bundle, png_bytes, rgb, truncated_png
from PIL import Image

README = REPO_ROOT / "README.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"

pytestmark = pytest.mark.timeout(600)


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


def tiny_video(path: Path, frames: int = 30, fmt: str | None = None) -> Path:
    """A short MPEG-4 video written with PyAV (frames=0: a stream header and no frames)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        st = c.add_stream("mpeg4", rate=30)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
        for i in range(frames):
            for pkt in st.encode(av.VideoFrame.from_ndarray(rgb(48, 64, seed=i), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode(None) if frames else ():
            c.mux(pkt)
    return path


def truncated_video(tmp: Path) -> Path:
    full = tiny_video(tmp / "full.mp4", 60)
    cut = tmp / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the MP4 index is written last: cut off
    return cut


def srt_file(tmp: Path, blocks: int = 30, body: str | None = None) -> Path:
    """A DJI-style .SRT sidecar, one block per frame at 30 fps (or one block with `body` as its text)."""
    path = tmp / "f.srt"
    if body is not None:
        path.write_text(f"1\n00:00:00,000 --> 00:00:00,033\n{body}\n")
        return path
    lines = [
        f"{i + 1}\n00:00:00,{round(i * 1000 / 30):03d} --> 00:00:00,{round((i + 1) * 1000 / 30):03d}\n"
        f"[latitude: 22.5] [longitude: 113.9] [rel_alt: 100.0 abs_alt: 150.0] [gb_yaw: 0.0 gb_pitch: -90.0]\n"
        for i in range(blocks)
    ]
    path.write_text("\n".join(lines))
    return path


def stream_one(tmp: Path, source, extra=()) -> list:
    return [small_bundle(tmp), source, "--out", tmp / "out", *extra]


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
    ("co2s-export", "`--calib-data` holding only label masks"): lambda t: [
        "--checkpoint",
        trained_tiny_checkpoint(),
        "--calib-data",
        one_image(
            t, "calib/masks/0.png", lambda p: p.parent.mkdir(parents=True) or Image.fromarray(rgb()).save(p)
        ).parent.parent,
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
    # co2s-stream
    ("co2s-stream", "a text file named `.mp4`"): lambda t: stream_one(
        t, one_image(t, "clip.mp4", lambda p: p.write_text("hello, I am a text file"))
    ),
    ("co2s-stream", "a truncated MP4"): lambda t: stream_one(t, truncated_video(t)),
    ("co2s-stream", "a video with no frames"): lambda t: stream_one(t, tiny_video(t / "zero.mkv", 0, "matroska")),
    ("co2s-stream", "a source that does not exist"): lambda t: stream_one(t, t / "gone.mp4"),
    ("co2s-stream", "an unknown scheme"): lambda t: stream_one(t, "foo://camera"),
    ("co2s-stream", "a camera that does not open"): lambda t: stream_one(t, "/dev/video97"),
    ("co2s-stream", "`gst:` without OpenCV built with GStreamer"): lambda t: stream_one(
        t, "gst:videotestsrc ! appsink"
    ),
    ("co2s-stream", "a folder without images"): lambda t: stream_one(t, (t / "empty").mkdir() or t / "empty"),
    ("co2s-stream", "`--telemetry` without `--camera-hfov`"): lambda t: stream_one(
        t, tiny_video(t / "f.mp4"), ["--telemetry", srt_file(t)]
    ),
    ("co2s-stream", "a malformed SRT sidecar"): lambda t: stream_one(
        t, tiny_video(t / "f.mp4"), ["--telemetry", srt_file(t, body="[iso: 100]"), "--camera-hfov", "84"]
    ),
    ("co2s-stream", "telemetry out of order"): lambda t: stream_one(
        t,
        tiny_video(t / "f.mp4"),
        [
            "--telemetry",
            one_image(
                t, "t.csv", lambda p: p.write_text("time,lat,lon,alt_agl\n0.5,22.5,113.9,100\n0.2,22.5,113.9,100\n")
            ),
            "--camera-hfov",
            "84",
        ],
    ),  # fmt: skip
    ("co2s-stream", "telemetry that does not cover the video"): lambda t: stream_one(
        t, tiny_video(t / "f.mp4"), ["--telemetry", srt_file(t, blocks=5), "--camera-hfov", "84"]
    ),
    ("co2s-stream", "`--drop oldest`"): lambda t: stream_one(t, tiny_video(t / "f.mp4"), ["--drop", "oldest"]),
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
def test_readme_row_is_what_the_user_sees(row, tmp_path, run_cli):
    cli, what, code, seen = row
    argv = CASES[(cli, what)](tmp_path)
    got_code, _, err = run_cli(cli, argv, quiet=cli in ("co2s-infer", "co2s-stream"))
    flat = " ".join(err.split())
    assert got_code == code, f"{cli} {what}: exit {got_code}, README says {code}\n{err}"
    assert message_pattern(seen).search(flat), f"{cli} {what}: README says {seen}\nthe CLI printed:\n{err}"
    assert "Traceback" not in err


def test_fault_table_names_tests_that_exist():
    """The faults table (after the markers) cites the tests that prove each row; they must exist."""
    text = README.read_text().split(END, 1)[-1].split("\n## ", 1)[0]
    cited = set(re.findall(r"`(test_\w+)`", text))
    assert len(cited) >= 10, f"{README}: the faults table cites {len(cited)} tests"
    here = TESTS_ROOT / "system"
    defined = {
        m
        for f in ("test_resource_faults.py", "test_kill_safety.py")
        for m in re.findall(r"^def (test_\w+)", (here / f).read_text(), re.M)
    }
    assert cited - defined == set(), "README cites tests that do not exist"
