"""Fixtures shared by every test folder, and the paths the tests read.

The tree mirrors the package: core/ (co2s errors, files, CLI policy, metrics, bundle contract), train/, export/,
runtime/, and system/ for the tests that cross stages (demo, kill safety, resource faults, README tables, fuzz,
packaging, layering). Stand-ins for backends, TensorRT, pycuda and bundles live in fakes/. Test file basenames
are unique across the tree (pytest's default rootdir-based "prepend" import mode, no __init__.py in the test
folders); this file's folder is put on sys.path by that mode, so `fakes`, `_export_helpers` and `_train_helpers`
import from every folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

TESTS_ROOT = Path(__file__).resolve().parent
REPO_ROOT = TESTS_ROOT.parent
DATA = TESTS_ROOT / "data"


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def _main(tool: str):
    if tool == "co2s-train":
        from co2s.train.cli import main
    elif tool == "co2s-export":
        from co2s.export.cli import main
    elif tool == "co2s-infer":
        from co2s.runtime.cli import infer_main as main
    elif tool == "co2s-bench":
        from co2s.runtime.cli import bench_main as main
    elif tool == "co2s-stream":
        from co2s.runtime.stream_cli import stream_main as main
    else:
        raise ValueError(f"no CLI named {tool!r}")
    return main


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory):
    """The runtime's user cache (optimised graphs, precision measurements) in a folder of this test session, never
    the user's ~/.cache/co2s; inherited by the CLIs the tests start as subprocesses."""
    os.environ["CO2S_CACHE_DIR"] = str(tmp_path_factory.mktemp("co2s-cache"))


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run one of the console tools in-process: run_cli("co2s-export", [...]) -> CliResult(code, out, err).

    The CLIs end through co2s.cli.run, which calls sys.exit; the status is read from SystemExit (a tool that
    returns without exiting fails the test). Output captured before the call is dropped, so out/err hold this
    run's only.
    """

    def run(tool: str, argv, *, quiet: bool = False) -> CliResult:
        main = _main(tool)
        args = [str(a) for a in argv] + (["-q"] if quiet else [])
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", [tool, *args])  # what a console script would see
        with pytest.raises(SystemExit) as e:
            main(args)
        cap = capsys.readouterr()
        return CliResult(int(e.value.code or 0), cap.out, cap.err)

    return run


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """A briefly trained tiny Co2S checkpoint on the synthetic dataset (trained once per session)."""
    from _export_helpers import trained_tiny_checkpoint

    return trained_tiny_checkpoint()


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    """fp32 + fp16 + int8 ONNX bundle of tiny_checkpoint, with the probs output (exported once per session).
    Shared: copy it before changing anything in it."""
    from _export_helpers import tiny_bundle

    return tiny_bundle()


@pytest.fixture
def folder_dataset(tmp_path):
    """Factory for a 'mer' folder dataset: folder_dataset(root=tmp_path/"data", **options) -> root
    (options as _train_helpers.folder_dataset)."""
    from _train_helpers import folder_dataset as make

    return lambda root=None, **kw: make(tmp_path / "data" if root is None else root, **kw)
