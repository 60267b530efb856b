"""Coverage-guided fuzzing (atheris/libFuzzer) of what co2s.runtime reads from users: image files and bundle manifests.

    pip install atheris                                        # in the [dev] extra
    python benchmarks/fuzz/fuzz_runtime.py image --seconds 60      # or: manifest
    python benchmarks/fuzz/fuzz_runtime.py manifest --seconds 60

Targets:
  image     the bytes as a user file, opened the way `co2s-infer` opens it (`co2s.runtime.io.open_source`, as .png for the
            Pillow reader and as .tif for the rasterio/GDAL reader), with default options and with
            `--bands 1 --stretch percentile:2,98 --nodata 0`, then read tile by tile like the pipeline does.
  manifest  the bytes as `co2s.json` in a bundle folder, loaded the way a bundle is opened (`co2s.bundle.load_bundle`),
            then with checksum verification (`verify=True`) against a small fake model file.

A crash is any exception other than `Co2SInputError` (the clear user-facing error), a hang past `--timeout`, or
running out of memory. The run starts from the seed corpus in benchmarks/fuzz/corpus/<target>/ (regenerate it with
make_corpus.py), keeps new interesting inputs in --work (a temporary folder by default), prints executions and
coverage, and exits 0 when nothing crashed; crashing inputs land in --artifacts (default
benchmarks/fuzz/artifacts/<target>/, git-ignored) and the exit status is 1.

Turning a crash into a regression test:
  1. replay it:  python benchmarks/fuzz/fuzz_runtime.py image --replay benchmarks/fuzz/artifacts/image/crash-<sha1>
  2. copy it to tests/data/fuzz_regressions/<what>.<tif|png|jpg|json> (or inline the bytes if they are few): every
     file there is replayed through its target by tests/system/test_fuzz_run.py (.json: manifest, others: image);
  3. add a named test_regression_<what> in tests/system/test_fuzz_properties.py that opens it through the public entry
     point (`co2s.runtime.io.open_source`, `co2s.bundle.load_bundle`) and asserts the clear Co2SInputError message, then fix the
     owning runtime module until it passes.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("image", "manifest", "selftest")  # selftest: a deliberate crash, for the tests
# The manifest seeds point at a model file with these bytes; the target writes it beside each co2s.json so
# checksum verification can succeed as well as fail.
FAKE_MODEL_NAME = "model.fp32.onnx"
FAKE_MODEL = b"co2s fuzz stand-in for an ONNX model\n"
# Whole-image decodes are refused above this (the CLI's default is Pillow's ~89 MP): a fuzz input that declares
# 80 MP would spend seconds decoding zeros and tell us nothing new.
FUZZ_MAX_PIXELS = 4_000_000
READ_TILE = 256  # the pipeline reads one tile window at a time; this is the window the target reads with
MAX_READ_PIXELS = 4_000_000  # larger (sparse, header-declared) rasters: only corner windows and a preview

_workdir: Path | None = None


def _new_scratch() -> Path:
    # on tmpfs when there is one: the targets write a file per execution
    return Path(tempfile.mkdtemp(prefix="co2s-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _scratch() -> Path:
    """The folder the targets write their files in: the one the parent made for a fuzz run (libFuzzer ends the
    worker with a C exit(), so the worker cannot clean up after itself), or a private one removed at exit."""
    global _workdir
    if _workdir is None:
        given = os.environ.get("CO2S_FUZZ_SCRATCH")
        _workdir = Path(given) if given else _new_scratch()
        if not given:
            atexit.register(shutil.rmtree, _workdir, ignore_errors=True)
    return _workdir


def _quiet() -> None:
    # GDAL reports every malformed header (through rasterio's loggers, or straight to stderr outside an Env) and
    # Pillow warns about odd tags: the CLI shows neither without -v, and here they would bury libFuzzer's output.
    os.environ.setdefault("CPL_LOG", os.devnull)
    warnings.simplefilter("ignore")
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    logging.getLogger("co2s.runtime").setLevel(logging.ERROR)


def _option_sets():
    from co2s.runtime.io import InputOptions, Stretch

    return (
        InputOptions(max_pixels=FUZZ_MAX_PIXELS),
        InputOptions(bands=(1,), stretch=Stretch("percentile", 2.0, 98.0), nodata=0.0, max_pixels=FUZZ_MAX_PIXELS),
    )


def _read_all(src) -> None:
    """Read like the pipeline: every tile window (or corners + preview for a large sparse raster)."""
    import numpy as np

    h, w = src.height, src.width
    assert h > 0 and w > 0, (h, w)
    if h * w <= MAX_READ_PIXELS:
        windows = [(y, x) for y in range(0, h, READ_TILE) for x in range(0, w, READ_TILE)]
    else:
        windows = [(0, 0), (max(0, h - READ_TILE), max(0, w - READ_TILE))]
    for y0, x0 in windows:
        th, tw = min(READ_TILE, h - y0), min(READ_TILE, w - x0)
        rgb, valid = src.read(y0, x0, th, tw)
        assert rgb.shape == (th, tw, 3) and rgb.dtype == np.uint8, (rgb.shape, rgb.dtype, th, tw)
        assert valid is None or (valid.shape == (th, tw) and valid.dtype == bool), valid
    prev = src.preview(64)
    assert prev.ndim == 3 and prev.shape[2] == 3 and prev.dtype == np.uint8, (prev.shape, prev.dtype)


def check_image(data: bytes) -> None:
    """Open `data` as a user image through the CLI's reader; only Co2SInputError may escape the readers."""
    from co2s.errors import Co2SInputError
    from co2s.runtime.io import open_source

    d = _scratch()
    for suffix in (".png", ".tif"):
        path = d / f"input{suffix}"
        path.write_bytes(data)
        for options in _option_sets():
            try:
                src = open_source(path, options)
            except Co2SInputError:
                continue
            try:
                _read_all(src)
            except Co2SInputError:
                pass
            finally:
                src.close()
        path.unlink()
    for extra in d.glob("input*"):  # GDAL side files (.aux.xml), never expected but never left to pile up
        extra.unlink()


def check_manifest(data: bytes) -> None:
    """`data` as a bundle's co2s.json, opened as `co2s-infer` opens a bundle and verified with checksums."""
    from co2s.bundle import MANIFEST_NAME, load_bundle
    from co2s.errors import Co2SInputError

    d = _scratch() / "bundle"
    d.mkdir(exist_ok=True)
    (d / FAKE_MODEL_NAME).write_bytes(FAKE_MODEL)
    (d / MANIFEST_NAME).write_bytes(data)
    try:
        b = load_bundle(d)
        assert b.tile >= 16 and 1 <= b.num_classes < 255, (b.tile, b.num_classes)
        assert b.palette.shape[0] >= b.num_classes and b.palette.shape[1:] == (3,), b.palette.shape
        assert b.batch.min <= b.batch.opt <= b.batch.max, b.batch
    except Co2SInputError:
        pass
    try:
        load_bundle(d, verify=True)
    except Co2SInputError:
        pass


def check_selftest(data: bytes) -> None:
    """Not a runtime target: crashes on any input starting with b"!", so a test can see a crash reported."""
    if data[:1] == b"!":
        raise RuntimeError("selftest crash")


CHECKS = {"image": check_image, "manifest": check_manifest, "selftest": check_selftest}

# Values a hand-edited or damaged manifest might hold where something else was expected.
_ODD_VALUES = (
    None,
    True,
    False,
    0,
    -1,
    1,
    15,
    255,
    2**31,
    2**64,
    1e308,
    -0.0,
    0.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "x" * 300,
    "8.7",
    "87\n",
    "sm_",
    "sm_8",
    "../../etc/passwd",
    "a\\b",
    "\x00",
    "\ud800",
    "0" * 64,
    [],
    [1, 2, 3],
    [[0, 0, 0]],
    {},
    {"min": 1},
    {"name": None},
)


def _json_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time libFuzzer's byte mutations, otherwise replace, drop or duplicate one node of the parsed JSON:
    byte flips alone rarely get past the JSON parser to the schema checks and the fields the runtime reads."""
    import json
    import random

    import atheris

    rng = random.Random(seed)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if doc is None or rng.random() < 0.5:
        return atheris.Mutate(data, max_size)
    nodes = [(None, None, doc)]  # (parent, key, value), breadth first
    for _parent, _key, value in nodes:
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        nodes += [(value, k, v) for k, v in children]
    parent, key, value = rng.choice(nodes)
    choice = rng.random()
    new = rng.choice(_ODD_VALUES) if choice < 0.6 else [value] if choice < 0.7 else {"x": value}
    if parent is None:
        doc = new
    elif choice > 0.85 and isinstance(parent, dict):
        del parent[key]
    elif choice > 0.85:
        parent.insert(key, value)
    else:
        parent[key] = new
    out = json.dumps(doc, allow_nan=True, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return out[:max_size]


# ------------------------------------------------------------------------------------------------- running
def _worker(target: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the child process: instrument the readers, then hand control to libFuzzer (never returns)."""
    import atheris

    _quiet()
    # Coverage feedback comes from Python bytecode: instrument our readers and Pillow's format parsers (GDAL and
    # Pillow's C decoders are not instrumented, but their failures still surface here as exceptions).
    with atheris.instrument_imports(include=["co2s", "PIL", "json"]):
        from co2s import bundle  # noqa: F401
        from co2s.runtime import io  # noqa: F401

        if target == "image":
            from PIL import (  # noqa: F401
                BmpImagePlugin,
                GifImagePlugin,
                JpegImagePlugin,
                PngImagePlugin,
                TiffImagePlugin,
                WebPImagePlugin,
            )

            from co2s.runtime.io import geotiff  # noqa: F401
    check = CHECKS[target]
    mutator = _json_mutator if target == "manifest" else None
    atheris.Setup([sys.argv[0], *libfuzzer_args], check, custom_mutator=mutator)
    atheris.Fuzz()


_FINAL = re.compile(r"^#(\d+)\s+DONE\s+cov:\s*(\d+)\s+ft:\s*(\d+)\s+corp:\s*(\d+)/(\S+)", re.M)
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
_PULSE = re.compile(r"^#(\d+)\s+\w+\s+cov:\s*(\d+)\s+ft:\s*(\d+)", re.M)


def summarize(log: str) -> dict:
    """Executions and coverage from libFuzzer's output (final stats when it finished, last status line if not)."""
    out = {"execs": 0, "cov": 0, "ft": 0, "corpus": 0}
    stats = dict((k, int(v)) for k, v in _STAT.findall(log))
    m = _FINAL.findall(log)
    if m:
        n, cov, ft, corp, _ = m[-1]
        out.update(execs=int(n), cov=int(cov), ft=int(ft), corpus=int(corp))
    else:
        p = _PULSE.findall(log)
        if p:
            out.update(execs=int(p[-1][0]), cov=int(p[-1][1]), ft=int(p[-1][2]))
    out["execs"] = stats.get("number_of_executed_units", out["execs"])
    out["new_units"] = stats.get("new_units_added", 0)
    out["peak_rss_mb"] = stats.get("peak_rss_mb", 0)
    return out


def fuzz(
    target: str,
    seconds: int,
    *,
    timeout: int,
    work: Path | None,
    artifacts: Path,
    max_len: int,
    rss_limit_mb: int,
    verbose: bool,
) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris (part of the [dev] extra)", file=sys.stderr)
        return 2
    seeds = HERE / "corpus" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    tmp_work = None
    if work is None:
        tmp_work = Path(tempfile.mkdtemp(prefix=f"co2s-fuzz-{target}-corpus-"))
        work = tmp_work
    work.mkdir(parents=True, exist_ok=True)
    # The first corpus folder receives new units; the committed seeds are only read.
    args = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-max_len={max_len}",
        f"-artifact_prefix={artifacts}{os.sep}",
        "-print_final_stats=1",
        str(work),
    ]
    if seeds.is_dir():
        args.append(str(seeds))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target, *args]
    scratch = _new_scratch()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            env={**os.environ, "CO2S_FUZZ_SCRATCH": str(scratch)},
            timeout=seconds + max(60, 4 * timeout),
        )
        rc, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = -9
        log = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    wall = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    if tmp_work is not None:
        shutil.rmtree(tmp_work, ignore_errors=True)
    crashes = sorted(set(artifacts.iterdir()) - before)
    s = summarize(log)
    if verbose:
        print(log, file=sys.stderr)
    elif rc != 0 or crashes:  # the traceback and libFuzzer's verdict, without the progress lines
        noise = re.compile(r"^(INFO: Instrumenting |#\d+\s+(NEW|REDUCE|pulse)\s)")
        print("\n".join(ln for ln in log.splitlines() if not noise.match(ln))[-20000:], file=sys.stderr)
    rate = s["execs"] / wall if wall > 0 else 0.0
    print(
        f"fuzz {target}: {wall:.0f} s, {s['execs']} executions ({rate:.0f}/s), coverage {s['cov']} edges, "
        f"{s['ft']} features, corpus {s['corpus']} (+{s['new_units']} new), peak RSS {s['peak_rss_mb']} MB, "
        f"{len(crashes)} crash(es)"
    )
    for c in crashes:
        print(f"  crash: {c}  (replay: python {Path(__file__).name} {target} --replay {c})")
    return 0 if rc == 0 and not crashes else 1


def replay(target: str, files: list[Path]) -> int:
    """Run inputs through the target in this process and show the traceback of the first crash."""
    _quiet()
    for f in files:
        CHECKS[target](Path(f).read_bytes())
        print(f"{f}: ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=TARGETS)
    ap.add_argument("--seconds", type=int, default=60, help="total fuzzing time (libFuzzer -max_total_time)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    ap.add_argument("--work", type=Path, help="folder for the growing corpus (default: a temporary folder)")
    ap.add_argument("--artifacts", type=Path, help="where crashing inputs go (default: artifacts/<target>/ here)")
    ap.add_argument("--max-len", type=int, default=None, help="largest input in bytes (default 64 KiB / 16 KiB)")
    ap.add_argument("--rss-limit-mb", type=int, default=3072)
    ap.add_argument("--replay", type=Path, nargs="+", help="run these inputs once instead of fuzzing")
    ap.add_argument("-v", "--verbose", action="store_true", help="print libFuzzer's log")
    a = ap.parse_args(argv)
    if a.replay:
        return replay(a.target, a.replay)
    max_len = a.max_len or (65536 if a.target == "image" else 16384)
    return fuzz(
        a.target,
        a.seconds,
        timeout=a.timeout,
        work=a.work,
        artifacts=a.artifacts or HERE / "artifacts" / a.target,
        max_len=max_len,
        rss_limit_mb=a.rss_limit_mb,
        verbose=a.verbose,
    )


if __name__ == "__main__":
    sys.exit(main())
