"""Whole runs on tiny students and small synthetic scenes: outputs, kill-and-resume, 2-process DDP, the CLI."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from co2s.train.checkpoint import load_checkpoint
from co2s.train.config import TrainConfig, paper_schedule
from co2s.train.model import co2s_from_state
from co2s.train.trainer import fit

# 2 labelled / 4 unlabelled / 1 val scenes of 64 px, 64 px crops: a run costs well under a second per iteration.
SMALL = dict(
    dataset="synthetic",
    preset="tiny",
    crop=64,
    image_size=64,
    num_labeled=2,
    num_unlabeled=4,
    num_val=1,
    batch_size=2,
    workers=0,
    log_every=1,
)


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**SMALL, **kw})


def _state(path: Path) -> dict:
    return load_checkpoint(path)


def _assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def _metrics(out: Path) -> list[dict]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_run_writes_config_metrics_events_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    result = fit(_cfg(out, iters=2, eval_every=1), progress=False)
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt"} <= {p.name for p in out.iterdir()}
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = _metrics(out)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert {"miou_clip", "miou_dinov3", "miou_fused", "clip/sta", "dinov3/fp", "lr"} <= set(rows[0])
    best = load_checkpoint(out / "best.pt", num_classes=5, dataset="synthetic")
    assert "optimizer" not in best and best["model_config"]["img_size"] == 64
    assert best["metrics"]["best"]["best_miou"] == pytest.approx(result["best_miou"])
    model = co2s_from_state(best["model_config"], best["model"])  # what export does
    assert list(model.students) == ["clip", "dinov3"]


def test_kill_and_resume_gives_the_same_weights(tmp_path):
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    fit(_cfg(whole, iters=4, eval_every=2), progress=False)
    fit(_cfg(pieces, iters=4, eval_every=2), stop_after=1, progress=False)  # "killed" after iteration 1
    fit(_cfg(pieces), resume=True, stop_after=2, progress=False)  # settings come from last.pt
    assert _state(pieces / "last.pt")["iteration"] == 3
    fit(_cfg(pieces), resume=True, progress=False)
    a, b = _state(whole / "last.pt"), _state(pieces / "last.pt")
    assert a["iteration"] == b["iteration"] == 4
    _assert_same_state(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        _assert_same_state(sa, sb)
    assert [r["miou_fused"] for r in _metrics(whole)] == [r["miou_fused"] for r in _metrics(pieces)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    fit(cfg, progress=False, device="cpu")


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cfg = _cfg(single, iters=3, eval_every=3, batch_size=2)
    fit(cfg, progress=False, device="cpu")
    # 2 ranks x 1 image = the same global batch: same samples, augmentations and normalisers (see sampling.py).
    mp.spawn(_ddp_worker, args=(2, _free_port(), replace(cfg, out=str(ddp), batch_size=1)), nprocs=2, join=True)
    a, b = _state(single / "last.pt"), _state(ddp / "last.pt")
    assert b["world_size"] == 2
    # Gradients agree to float rounding: compare Adam's first moments (a running sum of gradients) tightly.
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], atol=1e-6, rtol=1e-4)
    # Weights agree within a small fraction of one update (head lr 1e-3), except the last conv's bias: it shifts
    # every class logit equally, so its true gradient is 0 and Adam scales rounding noise up to +-lr steps.
    weights_a = {k: v for k, v in a["model"].items() if not k.endswith("head.head.bias")}
    weights_b = {k: v for k, v in b["model"].items() if not k.endswith("head.head.bias")}
    _assert_same_state(weights_a, weights_b, atol=1e-4)
    assert float(_metrics(single)[-1]["miou_fused"]) == pytest.approx(float(_metrics(ddp)[-1]["miou_fused"]), abs=1e-6)


@pytest.mark.parametrize("method", ["supervised", "unimatch-clip", "homogeneous"])
def test_baseline_methods_run(tmp_path, method):
    result = fit(_cfg(tmp_path / method, iters=1, method=method), progress=False)
    ckpt = _state(tmp_path / method / "last.pt")
    expected = {"supervised": ["clip", "dinov3"], "unimatch-clip": ["clip"], "homogeneous": ["dinov3", "dinov3"]}
    assert ckpt["model_config"]["students"] == expected[method]
    assert "fused" in result["last"]


def test_cli_fit_then_evaluate(tmp_path, run_cli):
    out = tmp_path / "cli"
    args = [
        "--dataset",
        "synthetic",
        "--preset",
        "tiny",
        "--iters",
        "1",
        "--out",
        str(out),
        "--crop",
        "64",
        "--image-size",
        "64",
        "--num-labeled",
        "2",
        "--num-unlabeled",
        "2",
        "--num-val",
        "1",
    ]
    code, out_text, err = run_cli("co2s-train", args)  # no subcommand: `fit` is the default
    assert code == 0, err
    assert "best fused val mIoU" in out_text + err
    code, out_text, err = run_cli("co2s-train", ["evaluate", out / "best.pt", "--dataset", "synthetic"])
    assert code == 0, err
    output = out_text + err
    assert "mIoU" in output and "fused" in output and "bare_soil" in output


def test_cli_reports_bad_checkpoint_with_exit_code_1(tmp_path):
    ckpt = tmp_path / "missing.pt"
    exe = Path(sys.executable).parent / "co2s-train"  # the installed console script, next to the interpreter
    proc = subprocess.run([str(exe), "evaluate", str(ckpt), "--dataset", "synthetic"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "missing.pt" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "dataset,split,unlabeled,iters,per_epoch",
    [
        ("whdld", "1_8", 3891, 38_880, 486),
        ("loveda", "1_40", 3677, 73_600, 920),
        ("potsdam", "1_8", 4309, 86_240, 1078),
        ("mer", "1_8", 745, 28_050, 187),
    ],
)
def test_paper_schedule_matches_spec_table(dataset, split, unlabeled, iters, per_epoch):
    s = paper_schedule(dataset, unlabeled, 512)
    assert (s.iters, s.eval_every, s.batch_size) == (iters, per_epoch, 2 if dataset == "whdld" else 1)
