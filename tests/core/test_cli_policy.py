"""The one CLI policy (co2s/cli.py), checked on every tool: the README's exit-status table, ok / bad input / usage
error / -q and -v / Ctrl-C for each CLI, Ctrl-C as a real SIGINT for co2s-infer and co2s-train (co2s-stream's:
tests/runtime/test_stream_cli.py), the entry points of
a runtime-only install, no empty --out left by a failed run, progress bars only on a terminal."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import REPO_ROOT
from fakes.runtime import make_bundle, rgb
from PIL import Image

import co2s.cli as policy
from co2s.cli import (
    EXIT_DEFERRED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_STATUSES,
    EXIT_TERMINATED,
    EXIT_USAGE,
)

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent
START, END = "<!-- exit-status-table:start -->", "<!-- exit-status-table:end -->"

pytestmark = pytest.mark.timeout(600)


# ------------------------------------------------------------------------------------------------ the table
def test_readme_exit_status_table_is_the_policy():
    text = README.read_text()
    assert START in text and END in text, f"{README}: the exit-status table markers are missing"
    rows = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1]
    assert rows == EXIT_STATUSES
    codes = (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEFERRED, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_TERMINATED)
    assert codes == (0, 1, 2, 3, 4, 130, 143)


def test_console_scripts_are_the_thin_entry_points_and_license_is_spdx():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    scripts = project["scripts"]
    assert set(scripts) == {"co2s-train", "co2s-export", "co2s-infer", "co2s-bench", "co2s-stream"}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "co2s.cli" and callable(getattr(policy, function)), (name, target)
        assert f"from co2s.cli import {function}" in (BIN / name).read_text(), f"{name}: reinstall (pip install -e .)"


def test_extra_modules_belong_to_their_extras():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in policy.EXTRA_MODULES.items():
        dists = [re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower().replace("-", "_") for d in extras[extra]]
        for module in modules:
            assert any(module in d for d in dists), f"{module} is not from an [{extra}] package: {dists}"


# ------------------------------------------------------------------------------------------------ every CLI
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("policy") / "b", tile=32)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    p = tmp_path_factory.mktemp("images") / "a.png"
    Image.fromarray(rgb()).save(p)
    return p


# tool -> (ok argv, bad-input argv, where KeyboardInterrupt is injected while it works)
def _tools(tmp: Path, bundle: Path, image: Path) -> dict:
    return {
        "co2s-train": (
            ["info", "--preset", "tiny", "--num-classes", "3", "--tile", "32"],
            ["prototypes", "--dataset", "atlantis", "--preset", "tiny", "--out", tmp / "p.npy"],
            ("co2s.train.model", "build_co2s"),  # `info` imports it when it runs
        ),
        "co2s-export": (
            ["--list-formats"],
            ["--checkpoint", tmp / "nope.pt", "--out", tmp / "x"],
            ("co2s.export.pipeline", "export_bundle"),
        ),
        "co2s-infer": (
            [bundle, image, "--out", tmp / "out"],
            [bundle, tmp / "nope.png", "--out", tmp / "out"],
            ("co2s.runtime.pipeline", "InferencePipeline.run"),
        ),
        "co2s-bench": (
            [bundle, "--calls", "1", "--warmup", "0"],
            [(tmp / "empty").mkdir() or tmp / "empty"],
            ("co2s.runtime.bench", "run_bench"),
        ),
        "co2s-stream": (
            [bundle, image, "--out", tmp / "out"],  # one still as an image sequence
            [bundle, tmp / "nope.mp4", "--out", tmp / "out"],
            ("co2s.runtime.streaming", "FrameStream._process"),
        ),
    }


TOOLS = ("co2s-train", "co2s-export", "co2s-infer", "co2s-bench", "co2s-stream")
INTERRUPT_ARGV = {
    "co2s-train": ["info", "--preset", "tiny", "--num-classes", "3", "--tile", "32"],
    "co2s-export": ["--untrained", "--preset", "tiny", "--num-classes", "3", "--tile", "64", "--out", "{tmp}/b"],
}


@pytest.mark.parametrize("tool", TOOLS)
def test_ok_bad_input_and_usage_error(tool, tmp_path, bundle, image, run_cli):
    ok, bad, _ = _tools(tmp_path, bundle, image)[tool]
    code, _, err = run_cli(tool, ok)
    assert code == EXIT_OK, err
    code, _, err = run_cli(tool, bad)
    assert code == EXIT_FAILED, err
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")] and "Traceback" not in err, err
    code, _, err = run_cli(tool, [*ok, "--no-such-option"])
    assert code == EXIT_USAGE and "No such option" in err and "Usage:" in err, err


@pytest.mark.parametrize("tool", TOOLS)
def test_quiet_and_verbose_are_accepted(tool, tmp_path, bundle, image, run_cli):
    ok, _, _ = _tools(tmp_path, bundle, image)[tool]
    for flag in ("-q", "--quiet", "-v", "--verbose"):
        code, _, err = run_cli(tool, [*ok, flag])
        assert code == EXIT_OK, (flag, err)
    code, _, err = run_cli(tool, [*ok, "-q", "-v"])
    assert code == EXIT_USAGE and "exclusive" in err


def test_quiet_silences_progress_lines_and_verbose_adds_detail(bundle, run_cli):
    import logging

    logging.getLogger("co2s.runtime").setLevel(
        logging.ERROR
    )  # as a library user (or the fuzz harness) might: -q/-v win

    def bench(*flags):
        r = run_cli("co2s-bench", [bundle, "--calls", "1", "--warmup", "0", *flags])
        return r.out, r.err

    out, err = bench()
    assert "benchmarking ort-cpu fp32 batch 1 (1 timed calls, 0 warm-up)" in err and "p50 ms" in out
    out, err = bench("-q")
    assert err == "" and "p50 ms" in out  # the result still, no progress lines
    out, err = bench("-v")
    assert "[ort-cpu fp32 batch 1]" in out  # co2s-bench -v: the per-stage tables too


@pytest.mark.parametrize("tool", TOOLS)
def test_ctrl_c_while_working_exits_130(tool, tmp_path, bundle, image, run_cli, monkeypatch):
    """KeyboardInterrupt raised inside the tool's main work (what SIGINT does to the main thread)."""
    import importlib

    ok, _, (module, attribute) = _tools(tmp_path, bundle, image)[tool]
    *owner, name = attribute.split(".")
    target = importlib.import_module(module)
    for part in owner:
        target = getattr(target, part)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, interrupted)
    argv = [a.format(tmp=tmp_path) if isinstance(a, str) else a for a in INTERRUPT_ARGV.get(tool, ok)]
    code, _, err = run_cli(tool, argv)
    assert code == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err


def _until(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, f"no {what} after {timeout} s"
        time.sleep(0.2)


def _sigint(cmd: list, ready, what: str, log: Path) -> tuple[int, str]:
    """Start `cmd` (stderr to a file, as a CI log), wait until `ready()`, let it work a second, send SIGINT."""
    with open(log, "w") as f:
        # SIGINT back to its default in the child: a suite started in the background by a shell (`pytest &`)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.DEVNULL,
            stderr=f,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            _until(proc, ready, what)
            time.sleep(1.0)  # well inside the work
            assert proc.poll() is None, "finished before the interrupt: give it more work"
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, log.read_text()


def test_sigint_to_co2s_infer_exits_130_and_leaves_no_output(tmp_path, bundle):
    scene = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2400, 2400, 3), dtype=np.uint8)).save(scene)
    log, out = tmp_path / "stderr.log", tmp_path / "out"
    code, err = _sigint(
        [BIN / "co2s-infer", bundle, scene, "--out", out, "-v", "--batch", "1"],
        lambda: "backend ort-cpu" in log.read_text(),
        "backend line",
        log,
    )
    assert code == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err and "done:" not in err
    assert not out.exists()  # no outputs, not even partial ones, and the --out this run created is gone
    assert "\r" not in err  # stderr is a file: no progress bar redraws in it


def test_sigint_to_co2s_train_exits_130(tmp_path):
    out = tmp_path / "run"
    small = "--preset tiny --crop 64 --image-size 64 --num-labeled 2 --num-unlabeled 2 --num-val 1 --batch-size 1"
    code, err = _sigint(
        [BIN / "co2s-train", "--dataset", "synthetic", *small.split(), "--iters", "100000", "--out", out],
        lambda: (out / "config.yaml").exists(),
        "config.yaml",
        tmp_path / "stderr.log",
    )
    assert code == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------ the rest
BLOCK_EXTRAS = (
    "import sys\n"
    "for m in {modules!r}: sys.modules[m] = None  # a runtime-only install: pip install co2s\n"
    "from co2s.cli import {main}\n"
    "{main}({argv!r})\n"
)


@pytest.mark.parametrize(
    "main,argv,extra",
    [
        ("train_main", ["--dataset", "synthetic", "--preset", "tiny", "--out", "{tmp}/run"], "train"),
        ("train_main", ["evaluate", "{tmp}/best.pt", "--dataset", "synthetic"], "train"),
        ("export_main", ["--untrained", "--preset", "tiny", "--num-classes", "3", "--out", "{tmp}/b"], "export"),
    ],
)
def test_runtime_only_install_names_the_extra(main, argv, extra, tmp_path):
    modules = [m for group in ("train", "export") for m in policy.EXTRA_MODULES[group]]
    code = BLOCK_EXTRAS.format(modules=modules, main=main, argv=[a.format(tmp=tmp_path) for a in argv])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    prog = "co2s-train" if main == "train_main" else "co2s-export"
    assert r.returncode == EXIT_FAILED, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: {prog} needs (torch|onnx\w*), which is not installed: pip install 'co2s\[{extra}\]'", lines[0]
    ), r.stderr
    assert list(tmp_path.iterdir()) == []
    help_code = BLOCK_EXTRAS.format(modules=modules, main=main, argv=["-h"])
    r = subprocess.run([sys.executable, "-c", help_code], capture_output=True, text=True, timeout=300)
    assert r.returncode == EXIT_OK and "Usage:" in r.stdout, r.stderr


def test_train_help_accepts_h_and_shows_the_training_options(run_cli):
    for flag in ("-h", "--help"):
        code, out, _ = run_cli("co2s-train", [flag])
        assert code == EXIT_OK
        assert "Commands:" in out and "evaluate" in out
        assert "Training options (fit, the default command)" in out and "--dataset" in out and "--iters" in out


def test_a_failed_run_removes_the_out_folder_it_created(tmp_path, bundle, run_cli, folder_dataset):
    text = tmp_path / "text.png"
    text.write_text("not an image")
    out = tmp_path / "new" / "nested" / "out"
    code, _, err = run_cli("co2s-infer", [bundle, text, "--out", out, "-q"])
    assert code == EXIT_FAILED and "not an image format" in err
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    code, *_ = run_cli("co2s-infer", [bundle, text, "--out", existing, "-q"])
    assert code == EXIT_FAILED and existing.is_dir()  # not this run's to remove
    run = tmp_path / "runs" / "r1"
    root = folder_dataset(labeled_lines=[])
    argv = ["--dataset", "mer", "--data-root", root, "--out", run, "--preset", "tiny", "--iters", "1", "--crop", "64"]
    code, _, err = run_cli("co2s-train", argv)
    assert code == EXIT_FAILED and "no samples" in err
    assert not (tmp_path / "runs").exists()


def test_unexpected_error_is_one_line_and_verbose_shows_the_traceback(bundle, run_cli, monkeypatch):
    import co2s.runtime.bench as bench

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "run_bench", boom)
    code, _, err = run_cli("co2s-bench", [bundle])
    assert code == EXIT_FAILED
    assert err.strip() == "error: unexpected RuntimeError: boom (run with -v for the traceback)"
    code, _, err = run_cli("co2s-bench", [bundle, "-v"])
    assert code == EXIT_FAILED and "Traceback" in err and 'raise RuntimeError("boom")' in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_draw_only_on_a_terminal(monkeypatch):
    policy.setup_logging()
    assert not policy.show_progress()  # pytest's captured stderr is no terminal: a log file gets no bars
    assert policy.progress_bar(range(3)).disable
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert policy.show_progress() and not policy.progress_bar(range(3)).disable
    with policy.step_progress(2, "co2s-export") as steps:
        steps.next("exporting the fp32 ONNX")
        steps.next("fp32 parity")
    assert "co2s-export" in term.getvalue() and "fp32 parity" in term.getvalue()
    policy.setup_logging(quiet=True)
    assert not policy.show_progress()
    policy.setup_logging()


def test_export_reports_each_long_step(tmp_path, run_cli, monkeypatch):
    import co2s.export.pipeline as pipeline

    seen = []

    class Recorder:
        def __init__(self, total, desc):
            seen.append(("total", total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append(("closed", None))

        def next(self, name):
            seen.append(("step", name))

    monkeypatch.setattr(pipeline, "step_progress", Recorder)
    argv = ["--untrained", "--preset", "tiny", "--num-classes", "3", "--tile", "64", "--calib-count", "1"]
    code, _, err = run_cli("co2s-export", [*argv, "--precision", "fp32,fp16", "--out", tmp_path / "b"])
    assert code == EXIT_OK, err
    steps = [name for kind, name in seen if kind == "step"]
    assert seen[0] == ("total", len(steps)) and seen[-1] == ("closed", None)
    assert steps == [
        "loading the model and the calibration tiles",
        "PyTorch reference predictions",
        "exporting the fp32 ONNX",
        "fp32 parity",
        "converting to fp16",
        "fp16 parity",
    ]
    from co2s.bundle import load_bundle

    assert load_bundle(tmp_path / "b").has_probs  # seamless blending needs no export option (issue 15)


def test_list_options():
    import click

    precision = policy.ListParam(("fp32", "fp16", "int8"), keywords=("auto",))
    assert precision.convert("FP16, fp32", None, None) == ("fp16", "fp32")
    assert precision.convert("auto", None, None) == ("auto",)
    for bad in ("fp8", "auto,fp16", ""):
        with pytest.raises(click.BadParameter):
            precision.convert(bad, None, None)
    batches = policy.ListParam()
    assert batches.convert("1,4", None, None) == (1, 4)
    for bad in ("0", "1,x"):
        with pytest.raises(click.BadParameter):
            batches.convert(bad, None, None)


def test_predict_array_names_the_layout_it_expects(bundle):
    from co2s.errors import Co2SInputError
    from co2s.runtime import load_bundle, open_backend, predict_array

    be = open_backend(load_bundle(bundle), "ort-cpu", "fp32")
    try:
        with pytest.raises(
            Co2SInputError, match=r"expects a uint8 HxWx3 RGB array, got uint8 3x40x50 \(channels first"
        ):
            predict_array(be, np.zeros((3, 40, 50), np.uint8))
        with pytest.raises(Co2SInputError, match=r"got float32 40x50x3 \(scale to 0-255"):
            predict_array(be, np.zeros((40, 50, 3), np.float32))
        assert predict_array(be, np.zeros((40, 50, 3), np.uint8))["labels"].shape == (40, 50)
    finally:
        be.close()
