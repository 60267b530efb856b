"""co2s.files: the one temporary naming, the leftover cleaner and the multi-file commit with rollback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from co2s.files import TEMP_NAME, commit_files, leftovers, remove_stale_temps, temp_name


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(out.stdout)


def test_temp_names_carry_the_writer_and_only_dead_writers_leftovers_are_removed(tmp_path):
    mine = temp_name(tmp_path / "a.labels.png")
    m = TEMP_NAME.match(mine.name)
    assert m and m["name"] == "a.labels.png" and int(m["pid"]) == os.getpid() and m["kind"] == "tmp"
    assert TEMP_NAME.match(temp_name(tmp_path / "b", "old").name)["kind"] == "old"

    dead = _dead_pid()
    mine.write_bytes(b"being written")
    stale_file = tmp_path / f".a.labels.png.{dead}.0badc0de.tmp"
    stale_file.write_bytes(b"half")
    stale_folder = tmp_path / f".bundle.{dead}.0badc0de.old"
    (stale_folder / "sub").mkdir(parents=True)
    other = tmp_path / f".b.png.{dead}.0badc0de.tmp"
    other.write_bytes(b"half")
    (tmp_path / ".hidden").write_bytes(b"not a temporary file")

    assert [p for p, _ in leftovers(tmp_path, "a.labels.png")] == [stale_file]
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale_file, stale_folder, other])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, ".hidden"])  # a live writer's stays


def test_commit_rolls_every_file_back_when_the_last_step_fails(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"old a")
    ta, tb = temp_name(a), temp_name(b)
    ta.write_bytes(b"new a")
    tb.write_bytes(b"new b")

    def manifest_write_fails():
        assert a.read_bytes() == b"new a" and b.read_bytes() == b"new b"  # both in place when `then` runs
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        commit_files([(ta, a), (tb, b)], then=manifest_write_fails)
    assert a.read_bytes() == b"old a" and not b.exists()  # as before the commit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no temporary or kept-aside file


def test_a_failed_rename_names_the_final_file_and_puts_earlier_ones_back(tmp_path, monkeypatch):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"old a")
    ta, tb = temp_name(a), temp_name(b)
    ta.write_bytes(b"new a")
    tb.write_bytes(b"new b")
    real = os.replace

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(b):
            raise PermissionError(13, "Permission denied", os.fspath(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError) as e:
        commit_files([(ta, a), (tb, b)])
    assert e.value.filename == os.fspath(b)
    monkeypatch.undo()
    assert a.read_bytes() == b"old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
