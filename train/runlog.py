"""What a training run reports besides its checkpoints: config.yaml, the progress bar, TensorBoard scalars (tb/) and
one metrics.csv row per evaluation. Only rank 0 writes; other ranks get a RunLog that does nothing."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from co2s.cli import progress_bar
from co2s.errors import ensure_writable_dir
from co2s.files import atomic_write_text, remove_stale_temps

from .config import TrainConfig
from .distributed import Dist, stop_together

if TYPE_CHECKING:
    from .evaluate import EvalResult


def prepare_run_folder(out: Path, d: Dist) -> None:
    """Before anything expensive: the run folder can be written (rank 0 checks, every rank stops on failure), and
    temporary files a killed run left there are removed."""

    def check() -> None:
        if not d.is_main:
            return
        ensure_writable_dir(out, f"--out {out}: cannot write to this folder")
        stale = remove_stale_temps(out)
        if stale:
            print(
                f"removed {len(stale)} temporary file(s) left by an interrupted run in {out}: "
                + ", ".join(p.name for p in stale)
            )

    stop_together(d, check)


def write_run_config(out: Path, cfg: TrainConfig, d: Dist) -> None:
    """config.yaml: the resolved settings of the run."""
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _means(values: dict[str, list[float]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in values.items()}


class RunLog:
    """Per-iteration losses go to the bar and, averaged over `log_every` iterations, to TensorBoard; their averages
    since the previous evaluation go with the val mIoU into metrics.csv."""

    def __init__(
        self, out: Path, *, enabled: bool, start: int, end: int, total: int, log_every: int, desc: str, progress: bool
    ):
        self.enabled, self.end, self.log_every = enabled, end, log_every
        self.csv_path = out / "metrics.csv"
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=start or None)
        self.bar = progress_bar(
            None, total=total, initial=start, enabled=progress and enabled, dynamic_ncols=True, desc=desc
        )
        self.window: dict[str, list[float]] = {}  # since the last TensorBoard write
        self.since_eval: dict[str, list[float]] = {}  # since the last metrics.csv row
        self.t0 = time.time()

    def step(self, done: int, logs: dict[str, float], lr: float) -> None:
        """The losses of iteration `done` (1-based); `logs` has "loss" and "<student>/x" among others."""
        for k, v in logs.items():
            self.window.setdefault(k, []).append(v)
            self.since_eval.setdefault(k, []).append(v)
        self.bar.update(1)
        students = [f"{k[:-2]} x {v:.3f}" for k, v in logs.items() if k.endswith("/x")]
        self.bar.set_postfix_str(" ".join([f"loss {logs['loss']:.3f}", *students, f"lr {lr:.2e}"]), refresh=False)
        if done % self.log_every == 0 or done == self.end:
            self._scalars({**_means(self.window), "lr": lr}, done, "train")
            self.window.clear()

    def evaluation(self, done: int, lr: float, result: EvalResult) -> None:
        miou = result.miou
        self._scalars({f"miou_{k}": v for k, v in miou.items()}, done, "val")
        self._row(
            {
                "iteration": done,
                "time_s": round(time.time() - self.t0, 1),
                "lr": lr,
                **_means(self.since_eval),
                **{f"miou_{k}": v for k, v in miou.items()},
            }
        )
        self.since_eval.clear()
        if self.enabled:
            self.bar.write(f"iteration {done}: val mIoU " + ", ".join(f"{k} {v:.2f}" for k, v in miou.items()))
            self.bar.write(result.table())

    def close(self) -> None:
        """Also on errors, so an error message starts on a line of its own, not after the bar."""
        self.bar.close()
        if self.writer:
            self.writer.close()

    def _scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def _row(self, row: dict[str, float | int]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        if not new:  # resumed runs append with the header already there (rows past the resume point dropped)
            with self.csv_path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) < row["iteration"]]
            fieldnames = list(rows[0]) if rows else list(row)
        else:
            rows, fieldnames = [], list(row)
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows + [row])
        atomic_write_text(self.csv_path, text.getvalue())  # a kill mid-write keeps the previous rows
