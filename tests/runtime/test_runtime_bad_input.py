"""Every kind of bad input gives a clear message naming the file, a non-zero exit and no partial outputs; in a
folder run the bad file is reported and skipped (or stops the run with --fail-fast)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fakes.runtime import damaged_bundle, make_bundle, png_bytes, rgb, truncated_png
from PIL import Image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32)


def outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


CASES = {
    "not_an_image": (lambda p: p.write_text("hello, I am a text file"), "not an image format"),
    "empty_file": (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    "empty_image": (lambda p: p.write_bytes(png_bytes(0, 10)), r"empty image \(0x10 pixels\)"),
    "truncated": (truncated_png, "truncated or corrupt"),
    "bomb": (lambda p: p.write_bytes(png_bytes(60000, 60000)), "decompression"),
    "grey": (lambda p: Image.fromarray(rgb()[..., 0]).save(p), r"1-band image.*--bands 1"),
    # alpha is the nodata mask, not a band (RGBA works: tests/runtime/test_gis_inputs.py); LA is grey
    "grey_alpha": (lambda p: Image.fromarray(rgb()[..., :2], "LA").save(p), r"1-band image.*--bands 1"),
    "sixteen_bit": (lambda p: Image.fromarray(rgb()[..., 0].astype(np.uint16) * 200).save(p), r"--stretch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_alone_fails_cleanly(case, bundle, tmp_path, run_cli):
    make, pattern = CASES[case]
    p = tmp_path / f"{case}.png"
    make(p)
    extra = ["--bands", "1"] if case == "sixteen_bit" else []
    code, _, err = run_cli("co2s-infer", [bundle, p, "--out", tmp_path / "out", *extra], quiet=True)
    assert code == 1
    import re

    assert re.search(pattern, err), err
    assert str(p) in err
    assert "Traceback" not in err
    assert outputs(tmp_path / "out") == []  # not even a hidden partial file


def test_band_and_stretch_choices_make_those_files_work(bundle, tmp_path, run_cli):
    Image.fromarray(rgb()[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb(), rgb()[..., :1]]), "RGBA").save(tmp_path / "rgba.png")
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "grey.png", tmp_path / "rgba.png", "--out", tmp_path / "o1", "--bands", "1"],
        quiet=True,
    )
    assert code == 0, err
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "rgba.png", "--out", tmp_path / "o2", "--bands", "3,2,1"], quiet=True
    )
    assert code == 0, err
    Image.fromarray(rgb()[..., 0].astype(np.uint16) * 200).save(tmp_path / "deep.png")
    code, _, err = run_cli(
        "co2s-infer",
        [bundle, tmp_path / "deep.png", "--out", tmp_path / "o3", "--bands", "1", "--stretch", "percentile:2,98"],
        quiet=True,
    )
    assert code == 0, err
    assert (tmp_path / "o3" / "deep.labels.png").is_file()


def test_max_pixels_guard_and_override(bundle, tmp_path, run_cli):
    Image.fromarray(rgb(40, 50)).save(tmp_path / "a.png")
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--max-pixels", "1000"], quiet=True
    )
    assert code == 1 and "decompression-bomb guard" in err and "--max-pixels 2000" in err
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--max-pixels", "2000"], quiet=True
    )
    assert code == 0, err


def test_folder_run_reports_and_skips_bad_files(bundle, tmp_path, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb(seed=1)).save(src / "a_good.png")
    truncated_png(src / "b_truncated.png")
    (src / "c_text.jpg").write_text("not a jpeg")
    Image.fromarray(rgb(seed=2)).save(src / "d_good.jpg")
    (src / "notes.txt").write_text("ignored: no image extension")
    os.symlink(tmp_path / "missing.png", src / "e_dangling.png")
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", tmp_path / "out"], quiet=True)
    assert code == 1
    assert "2 ok, 3 failed" in err
    failed_block = err.split("failed:", 1)[1]
    for name in ("b_truncated.png", "c_text.jpg", "e_dangling.png"):
        assert name in failed_block
    assert "ignored 1 file" in err
    assert outputs(tmp_path / "out") == sorted(
        [f"{s}.{k}.png" for s in ("a_good", "d_good") for k in ("confidence", "labels", "overlay")]
        + [f"{s}.areas.{k}" for s in ("a_good", "d_good") for k in ("csv", "json")]
        + ["areas.csv", "areas.json"]  # the folder run's combined table
    )


def test_fail_fast_stops_at_the_first_bad_file(bundle, tmp_path, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    truncated_png(src / "a_bad.png")
    for i in range(6):
        Image.fromarray(rgb(seed=i)).save(src / f"z{i}.png")
    code, _, err = run_cli(
        "co2s-infer", [bundle, src, "--out", tmp_path / "out", "--fail-fast", "--readers", "1"], quiet=True
    )
    assert code == 1 and "a_bad.png" in err
    assert "skipped" in err
    assert not [p for p in outputs(tmp_path / "out") if "partial" in p]


def test_skip_existing(bundle, tmp_path, run_cli):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    assert run_cli("co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o"], quiet=True).code == 0
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--skip-existing"], quiet=True
    )
    assert code == 0 and "1 skipped" in err


@pytest.mark.parametrize("damage", ["missing", "checksum"])
def test_broken_bundle_is_refused_before_any_output(damage, tmp_path, run_cli):
    root = damaged_bundle(tmp_path / "b", damage)
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    code, _, err = run_cli("co2s-infer", [root, tmp_path / "a.png", "--out", tmp_path / "out"], quiet=True)
    assert code == 1 and "model.fp32.onnx" in err
    assert ("missing" if damage == "missing" else "checksum mismatch") in err
    assert outputs(tmp_path / "out") == []


def test_usage_errors(bundle, tmp_path, run_cli):
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "nope.png", "--out", tmp_path / "o"], quiet=True)
    assert code == 1 and "nope.png: no such file" in err
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--tile-overlap", "64"], quiet=True
    )
    assert code == 1 and "--tile-overlap" in err
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--stretch", "percentile:9"], quiet=True
    )
    assert code == 1 and "--stretch" in err
    code, _, err = run_cli(
        "co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "o", "--backend", "nonsense"], quiet=True
    )
    assert code == 2


def test_unreadable_file_message(tmp_path, monkeypatch):
    """Permission problems (not reproducible as root, so simulated) name the file and the OS reason."""
    from co2s.errors import Co2SInputError
    from co2s.runtime.io import InputOptions, pillow

    Image.fromarray(rgb()).save(tmp_path / "locked.png")

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pillow.Image, "open", deny)
    with pytest.raises(Co2SInputError, match=r"locked\.png: cannot read \(Permission denied\)"):
        pillow.open_pillow(tmp_path / "locked.png", InputOptions())


def test_leftovers_of_a_killed_run_are_cleaned(bundle, tmp_path, run_cli):
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".a.labels.png.999999999.0badc0de.tmp"  # co2s.files.temp_name of no such process
    stale.write_bytes(b"half a png")
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    assert run_cli("co2s-infer", [bundle, tmp_path / "a.png", "--out", tmp_path / "out"], quiet=True).code == 0
    assert not stale.exists() and (tmp_path / "out" / "a.labels.png").is_file()
