"""Resource faults: a full disk while writing, an output folder that cannot be written, a read-only bundle.

Each CLI reports the fault as one `error: ...` line that names the path and the reason, exits with its usual
error status (co2s-train 2, co2s-export 1, co2s-infer 1), leaves no temporary or half-written file behind and
leaves earlier good files untouched. A full disk is injected at the write layer (the write raises ENOSPC after
part of the data went out); permissions are real (chmod) when not running as root, and injected otherwise,
since root ignores permission bits.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_fakes import make_bundle

from co2s.runtime.cli import bench_main, infer_main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DISK_FULL = "the disk is full (no space left on device)"
TRAIN = ["--dataset", "synthetic", "--preset", "tiny", "--crop", "64", "--image-size", "64", "--num-labeled", "2",
         "--num-unlabeled", "2", "--num-val", "1", "--batch-size", "1", "--workers", "0", "--device", "cpu"]
EXPORT = ["--untrained", "--preset", "tiny", "--num-classes", "5", "--tile", "64", "--precisions", "fp32",
          "--calib-count", "1"]


# ------------------------------------------------------------------------------------------------ helpers
def _exit(fn, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        fn()
    cap = capsys.readouterr()
    return int(e.value.code or 0), cap.out, cap.err


def train(args, monkeypatch, capsys):
    from co2s.train.cli import main

    monkeypatch.setattr(sys, "argv", ["co2s-train", *map(str, args)])
    return _exit(main, capsys)


def export(args, capsys):
    from co2s.export.cli import main

    return _exit(lambda: main([str(a) for a in args]), capsys)


def infer(args, capsys):
    return _exit(lambda: infer_main([str(a) for a in args] + ["-q"]), capsys)


def _error_line(err: str) -> str:
    """The one `error:` line; nothing like a traceback around it."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def _under(path, folder: Path) -> bool:
    try:
        p = Path(os.fsdecode(path)).absolute()
    except TypeError:  # a file descriptor
        return False
    return p == folder or folder in p.parents


def deny_writes(monkeypatch, folder: Path, err: int) -> None:
    """Make the OS refuse, with `err`, every change under `folder` (creating, opening for writing, renaming,
    deleting): what a folder without write permission (EACCES, for users other than root) or on a read-only
    mount (EROFS) does. Reading still works."""
    folder = folder.absolute()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def refuse(path):
        raise OSError(err, os.strerror(err), os.fsdecode(path))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove", "rmdir")}
    real_open = builtins.open

    def os_open(path, flags, *a, **k):
        if flags & write_flags and _under(path, folder):
            refuse(path)
        return real["open"](path, flags, *a, **k)

    def one_path(name):
        def f(path, *a, **k):
            if _under(path, folder) and not (name == "mkdir" and Path(path).absolute() == folder):
                refuse(path)
            return real[name](path, *a, **k)
        return f

    def two_paths(name):
        def f(src, dst, *a, **k):
            if _under(src, folder) or _under(dst, folder):
                refuse(dst)
            return real[name](src, dst, *a, **k)
        return f

    def py_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and _under(file, folder):
            refuse(file)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, one_path(name))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, two_paths(name))
    monkeypatch.setattr(builtins, "open", py_open)
    monkeypatch.setattr(io, "open", py_open)


@pytest.fixture(params=["chmod", "injected"])
def locked(request, tmp_path, monkeypatch):
    """A folder nobody may write into: chmod 0o500 (skipped as root, which ignores it) or an injected EACCES."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if request.param == "chmod":
        if IS_ROOT:
            pytest.skip("root ignores permission bits (the injected case covers it)")
        folder.chmod(0o500)
        request.addfinalizer(lambda: folder.chmod(0o700))
    else:
        deny_writes(monkeypatch, folder, errno.EACCES)
    return folder


def _never(what):
    def f(*a, **k):
        raise AssertionError(f"{what} started although the output folder cannot be written")
    return f


def _images(folder: Path, names=("a", "b")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(names):
        p = folder / f"{n}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", tile=32)


# ----------------------------------------------------------------------------------------------- disk full
def test_train_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, capsys):
    import torch

    from co2s.train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    real_save = torch.save
    before: dict[str, str] = {}

    def disk_full_at_iteration_4(obj, f, *a, **k):
        if obj.get("iteration") != 4:  # the checkpoints of iteration 2 are written normally
            return real_save(obj, f, *a, **k)
        if not before:
            before.update({n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in ("last.pt", "best.pt")})
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # part of it reached the disk, then it filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full_at_iteration_4)
    code, _, err = train([*TRAIN, "--iters", "4", "--eval-every", "2", "--out", out], monkeypatch, capsys)
    assert code == 2
    line = _error_line(err)
    expected = [f"error: {out / name}: cannot write the checkpoint: {DISK_FULL}" for name in ("best.pt", "last.pt")]
    assert line in expected, line
    assert not list(out.glob(".*.tmp")), "temporary checkpoint left behind"
    after = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in ("last.pt", "best.pt")}
    assert before and after == before  # the previous checkpoints are untouched ...
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["iteration"] == 2  # ... and still resumable


def test_export_disk_full_while_writing_the_bundle(tmp_path, monkeypatch, capsys):
    import co2s.export.onnx_export as onnx_export

    def disk_full(deploy, path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x08\x09" * 20_000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(onnx_export, "export_deploy_onnx", disk_full)
    out = tmp_path / "bundles" / "b"
    code, _, err = export([*EXPORT, "--out", out], capsys)
    assert code == 1
    assert _error_line(err) == f"error: --out {out}: cannot write the bundle: {DISK_FULL}; nothing was written"
    assert not out.exists() and _hidden(out.parent) == []

    prev = make_bundle(tmp_path / "bundles" / "prev", tile=64, num_classes=5)
    before = _digest(prev)
    code, _, err = export([*EXPORT, "--out", prev, "--force"], capsys)
    assert code == 1 and DISK_FULL in _error_line(err)
    assert _digest(prev) == before and _hidden(prev.parent) == []


def test_infer_disk_full_while_writing_outputs(bundle, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    _images(src, ("a",))
    out = tmp_path / "out"
    code, _, err = infer([bundle, src, "--out", out], capsys)
    assert code == 0, err
    before = _digest(out)
    _images(src, ("b",))  # a new input, nothing written for it yet

    real_save = Image.Image.save

    def disk_full(self, fp, format=None, **params):
        if _under(fp, out.absolute()):
            buf = io.BytesIO()
            real_save(self, buf, format=format or "PNG", **params)
            with builtins.open(fp, "wb") as f:
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, _, err = infer([bundle, src, "--out", out], capsys)
    assert code == 1
    assert "0 ok, 2 failed" in err and "Traceback" not in err
    failed = [ln.strip() for ln in err.split("failed:", 1)[1].strip().splitlines()]
    assert failed == [f"{out / n}.labels.png: cannot write: {DISK_FULL}" for n in ("a", "b")], failed
    assert _digest(out) == before  # a's earlier outputs untouched, nothing for b
    assert _hidden(out) == []  # no temporary files


# ------------------------------------------------------------------------------- unwritable output folder
def test_train_out_not_writable(locked, tmp_path, monkeypatch, capsys):
    import co2s.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_co2s", _never("building the model"))
    monkeypatch.setattr(trainer, "load_splits", _never("loading the data"))
    out = locked / "run"
    code, _, err = train([*TRAIN, "--iters", "2", "--out", out], monkeypatch, capsys)
    assert code == 2
    assert _error_line(err) == f"error: --out {out}: cannot write to this folder: permission denied"
    assert list(locked.iterdir()) == []


def test_export_out_not_writable(locked, tmp_path, monkeypatch, capsys):
    import co2s.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_model", _never("loading the model"))
    out = locked / "b"
    code, _, err = export([*EXPORT, "--out", out], capsys)
    assert code == 1
    assert _error_line(err) == f"error: --out {out}: cannot create the bundle in {locked}: permission denied"
    assert list(locked.iterdir()) == []


def test_infer_out_not_writable(locked, bundle, tmp_path, monkeypatch, capsys):
    import co2s.runtime.backends as backends

    monkeypatch.setattr(backends, "open_backend", _never("loading the model"))
    _images(tmp_path / "in")
    code, _, err = infer([bundle, tmp_path / "in", "--out", locked], capsys)
    assert code == 1
    assert _error_line(err) == f"error: --out {locked}: cannot write to this folder: permission denied"
    assert list(locked.iterdir()) == []


def test_bench_report_folder_not_writable(locked, bundle, monkeypatch, capsys):
    import co2s.runtime.bench as bench

    monkeypatch.setattr(bench, "run_bench", _never("the benchmark"))
    report = locked / "bench.json"
    code, _, err = _exit(lambda: bench_main([str(bundle), "--iters", "1", "--json", str(report)]), capsys)
    assert code == 1
    assert _error_line(err) == f"error: --json {report}: cannot write to {locked}: permission denied"


# ------------------------------------------------------------------------------------- read-only bundle
def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry (the folder included) with size and modification time: creating or deleting even a temporary
    file inside changes the folder's mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in [root, *sorted(root.rglob("*"))]}


def test_infer_and_bench_run_from_a_read_only_bundle(tmp_path, monkeypatch, capsys):
    root = make_bundle(tmp_path / "ro", tile=32, precisions=("fp32", "fp16"))
    for p in root.iterdir():
        p.chmod(0o444)
    root.chmod(0o555)
    try:
        before = _snapshot(root)
        deny_writes(monkeypatch, root, errno.EROFS)  # also a read-only mount: any write attempt would fail loudly
        _images(tmp_path / "in")
        code, _, err = infer([root, tmp_path / "in", "--out", tmp_path / "out"], capsys)
        assert code == 0, err
        assert "2 ok, 0 failed" in err
        assert len(list((tmp_path / "out").glob("*.labels.png"))) == 2
        code, out, err = _exit(lambda: bench_main([str(root), "--precision", "all", "--iters", "2", "--warmup", "1",
                                                   "--json", str(tmp_path / "bench.json")]), capsys)
        assert code == 0, err
        assert "fp32" in out and "fp16" in out and (tmp_path / "bench.json").is_file()
        monkeypatch.undo()
        assert _snapshot(root) == before  # nothing written, created or deleted in the bundle
    finally:
        root.chmod(0o755)
