"""SIGKILL at the worst moments, with real subprocesses: nothing written is ever half a file under its final name,
and rerunning (--resume, a plain rerun, --skip-existing) finishes the job and cleans up what the killed run left.

Kills that must land at a precise point (mid checkpoint, mid bundle, mid output commit) are made deterministic by
a small driver script: it patches one write function in the child process so that it writes part of its data and
then SIGKILLs its own process, then runs the real CLI entry point. No test hook lives in the production code.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _train_helpers import TINY_TRAIN
from fakes.runtime import make_bundle
from PIL import Image

from co2s.errors import Co2SInputError
from co2s.files import TEMP_NAME
from co2s.train.checkpoint import load_checkpoint

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
TRAIN = TINY_TRAIN


def _driver(tmp_path: Path, name: str, body: str) -> Path:
    """A python script: `body` (patches), then whatever entry point it ends with."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _run(args, timeout=240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=timeout, **kw)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _metrics(out: Path) -> tuple[list[str], list[dict]]:
    text = (out / "metrics.csv").read_text()
    lines = text.splitlines()
    rows = list(csv.DictReader(lines))
    return lines, rows


def _assert_clean_metrics(out: Path, iterations: list[int]) -> list[str]:
    """One header, one well-formed row per evaluation, in order, no duplicates, every cell a number."""
    lines, rows = _metrics(out)
    header = lines[0].split(",")
    assert lines.count(lines[0]) == 1, "header repeated"
    assert [int(r["iteration"]) for r in rows] == iterations
    for line in lines[1:]:
        assert len(line.split(",")) == len(header), f"garbled row: {line!r}"
    for r in rows:
        for _k, v in r.items():
            float(v)  # raises on a cut-off / garbled cell
    return lines


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------- training
def test_train_killed_mid_epoch_resumes_from_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [BIN / "co2s-train", *TRAIN, "--iters", "4", "--eval-every", "2", "--out", out]
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        # last.pt appears (atomically) after the evaluation at iteration 2; the next save is two iterations later,
        # so killing at once lands in the middle of the second "epoch" (evaluation period)
        _wait_for(lambda: (out / "last.pt").exists(), proc, what="the first last.pt")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    before = load_checkpoint(out / "last.pt", num_classes=5, dataset="synthetic")
    assert before["iteration"] == 2
    row2 = _assert_clean_metrics(out, [2])[1]

    res = _run([BIN / "co2s-train", *TRAIN, "--out", out, "--resume"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done at iteration 4" in res.stdout
    # the resumed run starts at the checkpoint's iteration: iterations 1-2 were not redone
    assert "resume: continuing at iteration 2 of 4" in res.stdout, res.stdout[-2000:]

    last = load_checkpoint(out / "last.pt", num_classes=5, dataset="synthetic")
    best = load_checkpoint(out / "best.pt", num_classes=5, dataset="synthetic")
    assert last["iteration"] == 4 and "optimizer" in last
    assert best["iteration"] in (2, 4) and best["iteration"] == last["metrics"]["best"]["best_iteration"]
    lines = _assert_clean_metrics(out, [2, 4])
    assert lines[1] == row2  # the row written before the kill is kept as it was
    assert not list(out.glob(".*.tmp"))


def test_train_killed_while_writing_last_pt(tmp_path):
    out = tmp_path / "run"
    driver = _driver(
        tmp_path,
        "train_kill_in_save",
        """
        import io, os, signal, sys
        import torch

        _real_save = torch.save

        def save(obj, f, *args, **kwargs):
            # last.pt of iteration 2 (the only payload with an optimizer at that iteration): write half, then die
            if isinstance(obj, dict) and obj.get("iteration") == 2 and "optimizer" in obj:
                buf = io.BytesIO()
                _real_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return _real_save(obj, f, *args, **kwargs)

        torch.save = save
        sys.argv = ["co2s-train", *sys.argv[1:]]
        from co2s.train.cli import main
        main()
    """,
    )
    res = _run([sys.executable, driver, *TRAIN, "--iters", "2", "--eval-every", "1", "--out", out])
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]

    # the kill landed mid-write: a half-written temporary file is there ...
    temps = list(out.glob(".last.pt.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0
    with pytest.raises(Co2SInputError, match="not a readable checkpoint"):
        load_checkpoint(temps[0])
    # ... but under the final name is the previous, complete checkpoint, and no temp file looks like one
    assert load_checkpoint(out / "last.pt", num_classes=5, dataset="synthetic")["iteration"] == 1
    assert {p.name for p in out.glob("*.pt")} <= {"last.pt", "best.pt"}
    if (out / "best.pt").exists():  # best.pt is written before last.pt, so it may already be iteration 2's
        assert load_checkpoint(out / "best.pt")["iteration"] in (1, 2)
    _assert_clean_metrics(out, [1, 2])  # the row of iteration 2 was written just before the checkpoint

    res = _run([BIN / "co2s-train", *TRAIN, "--out", out, "--resume"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "removed 1 temporary file(s) left by an interrupted run" in res.stdout and temps[0].name in res.stdout
    assert not temps[0].exists() and not list(out.glob(".*.tmp"))
    last = load_checkpoint(out / "last.pt", num_classes=5, dataset="synthetic")
    assert last["iteration"] == 2
    assert load_checkpoint(out / "best.pt")["iteration"] == last["metrics"]["best"]["best_iteration"]
    _assert_clean_metrics(out, [1, 2])  # iteration 2 redone: its row replaced, not duplicated


# --------------------------------------------------------------------------------------------------- export
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
EXPORT_KILL = """
    import os, signal, sys
    import co2s.export.onnx_export as onnx_export

    def export_deploy_onnx(deploy, path, **kwargs):
        # the first file of the bundle, cut off mid-write by a kill
        with open(path, "wb") as f:
            f.write(b"\\x08\\x09" + os.urandom(50_000))
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    onnx_export.export_deploy_onnx = export_deploy_onnx
    from co2s.export.cli import main
    main(sys.argv[1:])
"""


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_killed_mid_write_leaves_no_bundle_and_the_rerun_cleans_up(tmp_path, run_cli):
    from co2s.bundle import load_bundle

    driver = _driver(tmp_path, "export_kill", EXPORT_KILL)
    parent = tmp_path / "bundles"

    # 1. no bundle before: none after, only the hidden temporary folder of the killed export
    fresh = parent / "fresh"
    res = _run([sys.executable, driver, *EXPORT, "--out", fresh])
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert not fresh.exists()
    partial = [p for p in parent.iterdir() if p.name.startswith(".fresh.")]
    assert len(partial) == 1 and TEMP_NAME.match(partial[0].name)["kind"] == "tmp"
    assert (partial[0] / "model.fp32.onnx").is_file()  # the kill really landed while the bundle was written

    # 2. a previous bundle, replaced with --force by an export that is killed: the previous one is untouched
    prev = make_bundle(parent / "prev", tile=64, num_classes=5)
    before = _tree(prev)
    res = _run([sys.executable, driver, *EXPORT, "--out", prev, "--force"])
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert _tree(prev) == before
    load_bundle(prev, verify=True)
    prev_partial = [p for p in parent.iterdir() if p.name.startswith(".prev.")]
    assert len(prev_partial) == 1

    # 3. the rerun succeeds, removes what the killed export left and says so
    code, _, err = run_cli("co2s-export", [*EXPORT, "--out", fresh])
    assert code == 0, err
    assert f"removed {partial[0]} (left by an interrupted export)" in err
    assert not partial[0].exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(".fresh.")]
    m = load_bundle(fresh, verify=True)
    assert sorted(p.name for p in fresh.iterdir()) == ["co2s.json", "model.fp32.onnx"]
    assert m.data["model"]["untrained"] and m.data["model"]["tile"] == 64
    assert prev_partial[0].exists()  # another destination's leftovers are left to that destination's next export


def test_export_killed_between_the_renames_of_force_keeps_the_previous_bundle(tmp_path, capsys):
    """--force moves the previous bundle aside, then renames the new one in: a kill between the two renames must
    not lose the previous bundle. The next export to that place puts it back (and reports it) first."""
    from co2s.export.writer import AtomicBundle

    out = make_bundle(tmp_path / "bundles" / "b", tile=32)
    before = _tree(out)
    driver = _driver(
        tmp_path,
        "commit_kill",
        """
        import os, signal, sys
        from pathlib import Path
        from co2s.export.writer import AtomicBundle

        _real_replace = os.replace
        calls = 0

        def replace(src, dst, *args, **kwargs):
            global calls
            calls += 1
            if calls == 2:  # the previous bundle is aside, the new one not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
            return _real_replace(src, dst, *args, **kwargs)

        with AtomicBundle(Path(sys.argv[1]), force=True) as tmp:
            (tmp / "co2s.json").write_text("{}")
            os.replace = replace
    """,
    )
    res = _run([sys.executable, driver, out])
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert not out.exists()  # the kill landed in the window
    aside = [p for p in out.parent.iterdir() if p.name.startswith(".b.") and p.name.endswith(".old")]
    assert len(aside) == 1 and _tree(aside[0]) == before

    messages: list[str] = []
    with pytest.raises(RuntimeError, match="export failed"):  # even an export that then fails restores it
        with AtomicBundle(out, force=True, log=messages.append):
            raise RuntimeError("export failed")
    assert _tree(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["b"]
    assert any(m.startswith(f"restored {out} from {aside[0].name}") for m in messages), messages
    assert any("left by an interrupted export" in m for m in messages), messages


# ---------------------------------------------------------------------------------------------------- infer
def _images(folder: Path, n: int = 5) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _load_outputs(out: Path) -> dict[str, np.ndarray]:
    """The image outputs (NAME.areas.csv/json and the folder's areas.* are text, checked by name)."""
    return {
        p.name: np.asarray(Image.open(p))
        for p in sorted(out.iterdir())
        if p.suffix == ".png" and not p.name.startswith(".")
    }


def test_infer_killed_partway_then_skip_existing_finishes_the_same_set(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", tile=32)
    inputs = _images(tmp_path / "in")
    out = tmp_path / "out"
    # killed at rename number 12 into the output folder = after 2 inputs x 5 files (labels, overlay, confidence,
    # areas.csv, areas.json) and 1 file (the overlay) of the third input
    driver = _driver(
        tmp_path,
        "infer_kill",
        """
        import os, signal, sys
        from pathlib import Path

        OUT = Path(sys.argv[sys.argv.index("--out") + 1]).resolve()
        _real_replace = os.replace
        renames = 0

        def replace(src, dst, *args, **kwargs):
            global renames
            if Path(dst).resolve().parent == OUT:
                renames += 1
                if renames == 12:
                    os.kill(os.getpid(), signal.SIGKILL)
            return _real_replace(src, dst, *args, **kwargs)

        os.replace = replace
        from co2s.runtime.cli import infer_main
        infer_main(sys.argv[1:])
    """,
    )
    res = _run([sys.executable, driver, bundle, tmp_path / "in", "--out", out, "-q", "--readers", "1"])
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]

    # every file under a final name is complete: it decodes and has its input's size
    sizes = {p.stem: Image.open(p).size[::-1] for p in inputs}
    done = _load_outputs(out)
    assert len(done) == 7, sorted(done)
    for name, arr in done.items():
        assert arr.shape[:2] == sizes[name.split(".")[0]], name
    finished = sorted(n.split(".")[0] for n in done if n.endswith(".labels.png"))
    assert len(finished) == 2
    for stem in finished:  # a labels file means all five files of that input are in place
        assert {f"{stem}.{k}.png" for k in ("labels", "overlay", "confidence")} <= set(done)
        assert (out / f"{stem}.areas.csv").is_file() and (out / f"{stem}.areas.json").is_file()
    interrupted = {n.split(".")[0] for n in done} - set(finished)
    assert len(interrupted) == 1  # one file of the third input was renamed before the kill, but not its labels
    assert all(TEMP_NAME.match(n)["kind"] == "tmp" for n in _hidden(out)) and _hidden(out)

    res = _run([BIN / "co2s-infer", bundle, tmp_path / "in", "--out", out, "-q", "--skip-existing"])
    assert res.returncode == 0, res.stderr
    assert "3 ok, 0 failed, 2 skipped" in res.stderr
    assert _hidden(out) == []  # the killed run's temporary files are gone

    ref = tmp_path / "ref"
    res = _run([BIN / "co2s-infer", bundle, tmp_path / "in", "--out", ref, "-q"])
    assert res.returncode == 0, res.stderr
    got, want = _load_outputs(out), _load_outputs(ref)
    assert sorted(got) == sorted(want) and len(got) == 3 * len(inputs)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
