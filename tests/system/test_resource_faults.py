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
from _train_helpers import TINY_TRAIN
from fakes.runtime import make_bundle
from PIL import Image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DISK_FULL = "the disk is full (no space left on device)"
TRAIN = TINY_TRAIN
EXPORT = [
    "--untrained",
    "--preset",
    "tiny",
    "--num-classes",
    "5",
    "--tile",
    "64",
    "--precision",
    "fp32",
    "--calib-count",
    "1",
]


# ------------------------------------------------------------------------------------------------ helpers
def _error_line(err: str) -> str:
    """The one `error:` line; nothing like a traceback around it."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
def test_train_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, run_cli):
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
    code, _, err = run_cli("co2s-train", [*TRAIN, "--iters", "4", "--eval-every", "2", "--out", out])
    assert code == 1
    line = _error_line(err)
    expected = [f"error: {out / name}: cannot write the checkpoint: {DISK_FULL}" for name in ("best.pt", "last.pt")]
    assert line in expected, line
    assert not list(out.glob(".*.tmp")), "temporary checkpoint left behind"
    after = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in ("last.pt", "best.pt")}
    assert before and after == before  # the previous checkpoints are untouched ...
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["iteration"] == 2  # ... and still resumable


def test_export_disk_full_while_writing_the_bundle(tmp_path, monkeypatch, run_cli):
    import co2s.export.onnx_export as onnx_export

    def disk_full(deploy, path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x08\x09" * 20_000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(onnx_export, "export_deploy_onnx", disk_full)
    out = tmp_path / "bundles" / "b"
    code, _, err = run_cli("co2s-export", [*EXPORT, "--out", out])
    assert code == 1
    assert _error_line(err) == f"error: --out {out}: cannot write the bundle: {DISK_FULL}; nothing was written"
    assert not out.exists() and _hidden(out.parent) == []

    prev = make_bundle(tmp_path / "bundles" / "prev", tile=64, num_classes=5)
    before = _digest(prev)
    code, _, err = run_cli("co2s-export", [*EXPORT, "--out", prev, "--force"])
    assert code == 1 and DISK_FULL in _error_line(err)
    assert _digest(prev) == before and _hidden(prev.parent) == []


def test_infer_disk_full_while_writing_outputs(bundle, tmp_path, monkeypatch, run_cli):
    src = tmp_path / "in"
    _images(src, ("a",))
    out = tmp_path / "out"
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
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
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
    assert code == 1
    # the first full-disk failure ends the run: every later output would fail the same way
    assert "0 ok, 1 failed, 1 skipped" in err and "Traceback" not in err
    failed = [ln.strip() for ln in err.split("failed:", 1)[1].strip().splitlines()]
    assert failed in ([f"{out / n}.labels.png: cannot write: {DISK_FULL}"] for n in "ab"), (
        failed
    )  # whichever came first
    assert "stopped because the output disk is full: 1 input(s) not processed" in err, err
    assert _digest(out) == before  # a's earlier outputs untouched, nothing for b
    assert _hidden(out) == []  # no temporary files


# ------------------------------------------------------------------------------- unwritable output folder
def test_train_out_not_writable(locked, tmp_path, monkeypatch, run_cli):
    import co2s.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_co2s", _never("building the model"))
    monkeypatch.setattr(trainer, "load_splits", _never("loading the data"))
    out = locked / "run"
    code, _, err = run_cli("co2s-train", [*TRAIN, "--iters", "2", "--out", out])
    assert code == 1
    assert _error_line(err) == f"error: --out {out}: cannot write to this folder: permission denied"
    assert list(locked.iterdir()) == []


def test_export_out_not_writable(locked, tmp_path, monkeypatch, run_cli):
    import co2s.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_model", _never("loading the model"))
    out = locked / "b"
    code, _, err = run_cli("co2s-export", [*EXPORT, "--out", out])
    assert code == 1
    assert _error_line(err) == f"error: --out {out}: cannot create the bundle in {locked}: permission denied"
    assert list(locked.iterdir()) == []


def test_infer_out_not_writable(locked, bundle, tmp_path, monkeypatch, run_cli):
    import co2s.runtime.backends as backends

    monkeypatch.setattr(backends, "open_backend", _never("loading the model"))
    _images(tmp_path / "in")
    code, _, err = run_cli("co2s-infer", [bundle, tmp_path / "in", "--out", locked], quiet=True)
    assert code == 1
    assert _error_line(err) == f"error: --out {locked}: cannot write to this folder: permission denied"
    assert list(locked.iterdir()) == []


def test_bench_report_folder_not_writable(locked, bundle, monkeypatch, run_cli):
    import co2s.runtime.bench as bench

    monkeypatch.setattr(bench, "run_bench", _never("the benchmark"))
    report = locked / "bench.json"
    code, _, err = run_cli("co2s-bench", [bundle, "--calls", "1", "--json", report])
    assert code == 1
    assert _error_line(err) == f"error: --json {report}: cannot write to {locked}: permission denied"


# ------------------------------------------------------------------------------------- read-only bundle
def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry (the folder included) with size and modification time: creating or deleting even a temporary
    file inside changes the folder's mtime."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in [root, *sorted(root.rglob("*"))]
    }


def test_infer_and_bench_run_from_a_read_only_bundle(tmp_path, monkeypatch, run_cli):
    root = make_bundle(tmp_path / "ro", tile=32, precisions=("fp32", "fp16"))
    for p in root.iterdir():
        p.chmod(0o444)
    root.chmod(0o555)
    try:
        before = _snapshot(root)
        deny_writes(monkeypatch, root, errno.EROFS)  # also a read-only mount: any write attempt would fail loudly
        _images(tmp_path / "in")
        code, _, err = run_cli("co2s-infer", [root, tmp_path / "in", "--out", tmp_path / "out"], quiet=True)
        assert code == 0, err
        assert "2 ok, 0 failed" in err
        assert len(list((tmp_path / "out").glob("*.labels.png"))) == 2
        code, out, err = run_cli(
            "co2s-bench",
            [root, "--precision", "all", "--calls", "2", "--warmup", "1", "--json", tmp_path / "bench.json"],
        )
        assert code == 0, err
        assert "fp32" in out and "fp16" in out and (tmp_path / "bench.json").is_file()
        monkeypatch.undo()
        assert _snapshot(root) == before  # nothing written, created or deleted in the bundle
    finally:
        root.chmod(0o755)


# ------------------------------------------------------------------------------------------- GeoTIFF outputs
def _rasterio():
    return pytest.importorskip("rasterio", reason="GeoTIFF outputs need rasterio (pip install 'co2s[geo]')")


def _geotiffs(folder: Path, names=("a", "b")) -> None:
    rio = _rasterio()
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        data = np.random.default_rng(i).integers(0, 256, (3, 300, 280), dtype=np.uint8)
        with rio.open(
            folder / f"{n}.tif",
            "w",
            driver="GTiff",
            width=280,
            height=300,
            count=3,
            dtype="uint8",
            crs="EPSG:32640",
            transform=from_origin(300000.0, 2800000.0, 0.5, 0.5),
        ) as ds:
            ds.write(data)


def _full_file_system(monkeypatch, folder: Path) -> None:
    """statvfs says no space is left under `folder`: what a full disk shows while the partial files still exist."""
    real = os.statvfs

    def statvfs(path):
        st = real(path)
        if not _under(path, folder):
            return st
        return os.statvfs_result(
            (st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files, st.f_ffree, st.f_favail, st.f_flag, st.f_namemax)
        )

    monkeypatch.setattr(os, "statvfs", statvfs)


class _GdalOnAFullDisk:
    """A rasterio dataset being written on a disk that fills up, as GDAL behaves there (measured on a full tmpfs):
    'write' - a strip write puts part of the rows out, then raises RasterioIOError ("Write failed") whose cause
    is GDAL's "TIFFAppendToStrip:Write error", with no errno (libtiff prints "No space left on device" to stderr);
    'close' - the writes succeed (the blocks sit in GDAL's cache) and close() returns normally although flushing
    them and the TIFF directory failed, leaving a truncated file (rasterio ignores GDALClose's error)."""

    def __init__(self, ds, where: str):
        object.__setattr__(self, "_ds", ds)
        object.__setattr__(self, "_where", where)

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def __setattr__(self, name, value):
        setattr(self._ds, name, value)

    def write(self, arr, indexes=None, window=None, **kw):
        if self._where != "write":
            return self._ds.write(arr, indexes, window=window, **kw)
        from rasterio._err import CPLE_AppDefinedError
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        half = max(1, arr.shape[0] // 2)
        self._ds.write(arr[:half], indexes, window=Window(window.col_off, window.row_off, window.width, half))
        cause = CPLE_AppDefinedError(3, 1, f"TIFFAppendToStrip:Write error at scanline {window.row_off}")
        raise RasterioIOError("Write failed. See previous exception for details.") from cause

    def close(self):
        path = Path(self._ds.name)
        self._ds.close()
        if self._where == "close" and path.exists():
            with builtins.open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("where", ["write", "close"])
def test_infer_disk_full_while_writing_geotiff_outputs(where, bundle, tmp_path, monkeypatch, run_cli):
    rio = _rasterio()
    src, out = tmp_path / "in", tmp_path / "out"
    _geotiffs(src, ("a",))
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "a.areas.csv",
        "a.areas.json",
        "a.confidence.tif",
        "a.labels.tif",
        "a.overlay.png",
    ]
    before = _digest(out)
    _geotiffs(src, ("b",))  # a new input, nothing written for it yet

    real_open = rio.open

    def open_on_full_disk(fp, mode="r", *a, **k):
        ds = real_open(fp, mode, *a, **k)
        return _GdalOnAFullDisk(ds, where) if mode == "w" and _under(fp, out.absolute()) else ds

    monkeypatch.setattr(rio, "open", open_on_full_disk)
    _full_file_system(monkeypatch, out.absolute())
    code, _, err = run_cli("co2s-infer", [bundle, src, "--out", out], quiet=True)
    assert code == 1
    # the first full-disk failure ends the run: every later output would fail the same way
    assert "0 ok, 1 failed, 1 skipped" in err and "Traceback" not in err
    failed = [ln.strip() for ln in err.split("failed:", 1)[1].strip().splitlines()]
    assert failed in ([f"{out / n}.labels.tif: cannot write: {DISK_FULL}"] for n in "ab"), (
        failed
    )  # whichever came first
    assert "stopped because the output disk is full: 1 input(s) not processed" in err, err
    assert _digest(out) == before  # a's earlier outputs untouched, nothing for b
    assert _hidden(out) == []  # no temporary files


# ------------------------------------------------------------------------------------- TensorRT engines
def _stand_in_gpu(monkeypatch, plan: bytes) -> None:
    from fakes.tensorrt import tensorrt_module

    import co2s.export.engines as engines
    import co2s.export.tensorrt_build as tensorrt_build

    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_module(plan=plan))
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(tensorrt_build, "device_info", lambda: {"name": "Stand-in GPU", "compute_capability": "8.7"})


def _disk_full_writing_engines(monkeypatch, bundle: Path) -> None:
    """Writing any *.engine file under `bundle` puts half of the bytes out, then the disk is full."""
    real_open = builtins.open

    class HalfThenFull:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            data = memoryview(data).cast("B")
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    def py_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if "w" in mode and _under(file, bundle.absolute()) and ".engine" in Path(os.fsdecode(file)).name:
            return HalfThenFull(f)
        return f

    monkeypatch.setattr(builtins, "open", py_open)


def test_export_disk_full_while_writing_an_engine(tmp_path, monkeypatch, run_cli):
    from co2s.bundle import load_bundle

    b = make_bundle(tmp_path / "b", tile=32, precisions=("fp32", "fp16"))
    engine = b / "model.fp16.engine"
    expected = f"error: {engine}: cannot write the TensorRT engine: {DISK_FULL}; the bundle is unchanged"

    # a bundle without engines: the first build fails, nothing is added
    before = _digest(b)
    _stand_in_gpu(monkeypatch, b"\x00plan-1" * 4096)
    with monkeypatch.context() as m:
        _disk_full_writing_engines(m, b)
        code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 1
    assert _error_line(err) == expected
    assert _digest(b) == before and _hidden(b) == []

    # room again: the engine and the timing cache go in, with their manifest records
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 0, err
    m1 = load_bundle(b, verify=True)
    assert m1.has("engine", "fp16") and m1.has("timing-cache") and engine.read_bytes() == b"\x00plan-1" * 4096

    # rebuilding over it: the disk fills while the new engine is written; the old engine, cache and manifest stay
    before = _digest(b)
    _stand_in_gpu(monkeypatch, b"\x00plan-2" * 8192)
    with monkeypatch.context() as m:
        _disk_full_writing_engines(m, b)
        code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 1
    assert _error_line(err) == expected
    assert _digest(b) == before and _hidden(b) == []
    assert load_bundle(b, verify=True).data == m1.data  # and it still verifies


def test_export_disk_full_while_updating_the_manifest(tmp_path, monkeypatch, run_cli):
    import json

    from co2s.bundle import load_bundle

    b = make_bundle(tmp_path / "b", tile=32, precisions=("fp32", "fp16"))
    _stand_in_gpu(monkeypatch, b"\x00plan-1" * 4096)
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 0, err
    before = _digest(b)

    real_dumps = json.dumps

    def disk_full(obj, *a, **k):  # the manifest is serialised into its temporary file: the disk is full there
        if isinstance(obj, dict) and "artifacts" in obj:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_dumps(obj, *a, **k)

    _stand_in_gpu(monkeypatch, b"\x00plan-2" * 8192)
    monkeypatch.setattr(json, "dumps", disk_full)
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 1
    assert _error_line(err) == (
        f"error: {b / 'co2s.json'}: cannot update the manifest: {DISK_FULL}; the bundle is unchanged"
    )
    assert _digest(b) == before and _hidden(b) == []  # the new engine and cache were taken back out
    monkeypatch.undo()
    load_bundle(b, verify=True)  # still verifies


def test_engine_build_killed_while_replacing_is_repaired_by_the_next_run(tmp_path, monkeypatch, run_cli):
    import subprocess

    from co2s.bundle import load_bundle

    b = make_bundle(tmp_path / "b", tile=32, precisions=("fp32", "fp16"))
    _stand_in_gpu(monkeypatch, b"\x00plan-1" * 4096)
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 0, err
    before = _digest(b)
    # what a rebuild killed between renaming the new engine in and rewriting the manifest leaves: the new engine
    # under the final name, the previous one kept aside, the builder's own temporary file of the timing cache
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    engine = b / "model.fp16.engine"
    os.link(engine, b / f".model.fp16.engine.{dead}.0badc0de.old")
    engine.unlink()
    engine.write_bytes(b"\x00plan-2" * 8192)
    builder_temp = b / f"..timing.cache.{dead}.0badc0de.tmp.{dead}.1badc0de.tmp"  # co2s.files.temp_name of a temp
    builder_temp.write_bytes(b"partial")
    with pytest.raises(Exception, match="model.fp16.engine is 57344 bytes, the manifest says 28672"):
        load_bundle(b, verify=True)

    monkeypatch.setattr("co2s.export.engines.has_nvidia_gpu", lambda: False)
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 3  # engines deferred (no GPU now): nothing built, but the CLI put the bundle right first
    assert f"removed {builder_temp} (left by an interrupted engine build)" in err
    assert f"restored {engine} (an engine build was interrupted while replacing it)" in err
    assert _digest(b) == before and _hidden(b) == []
    load_bundle(b, verify=True)
