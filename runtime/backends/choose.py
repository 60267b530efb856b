"""`--precision auto` on onnxruntime's CPU: the fastest ONNX artefact whose parity passed, measured on this machine.

The CPU precisions race: fp32, fp16, int8 (TensorRT-shaped) and int8-cpu, whichever the bundle has and passed its
parity gate at export. Each gets its own session, a warm-up call and a few timed calls on the bundle's preferred
batch of random tiles (a time budget per candidate, not a fixed count, so a 750 MB model is not run 20 times);
the lowest median wins. A single passing candidate is taken without measuring. To skip the measurement, name the
precision (`--precision fp32`).

The result is cached as JSON in the user's cache (`cache_dir()/precision/`), one file per key: the artefacts'
sha256, CPU model and core count, onnxruntime version, threads and batch. A file of another key never answers for
this one (another CPU or an upgraded onnxruntime measures again, into its own file), and a file whose content does
not match its name, or does not parse, is named in one warning line and measured again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.bundle import Bundle
from co2s.bundle.formats import ONNX, PRECISIONS, get_format
from co2s.errors import Co2SOutputError
from co2s.files import atomic_write_text

from ..profiler import cpu_model
from .cache import cache_dir, key_digest, read_record, shown

log = logging.getLogger("co2s.runtime")

CPU_PRECISIONS = tuple(p for p in PRECISIONS if get_format(ONNX, p).cpu)
SCHEMA = "co2s.precision-choice/1"
BUDGET_S = 1.5  # timed calls per candidate stop after this much time...
MIN_CALLS, MAX_CALLS = 3, 20  # ...but never fewer / more calls than these

# measure(bundle, precisions, threads=..., batch=...) -> {precision: [ms per call, ...]}
Measure = Callable[..., dict[str, list[float]]]


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str  # one line for co2s-bench and co2s-infer --profile
    p50_ms: dict[str, float] | None = None  # per candidate, when measured
    cache: Path | None = None
    reused: bool = False  # the measurement came from the cache


def time_precisions(
    bundle: Bundle,
    precisions: Sequence[str],
    *,
    threads: int | None,
    batch: int,
    budget_s: float = BUDGET_S,
) -> dict[str, list[float]]:
    """Milliseconds per call of each precision on onnxruntime's CPU."""
    tiles = np.random.default_rng(0).integers(0, 256, (batch, bundle.tile, bundle.tile, 3), dtype=np.uint8)
    out = {p: _time_one(bundle, p, tiles, threads, budget_s) for p in precisions}
    for p, times in out.items():
        log.debug("measured %s: %d calls, median %.1f ms", p, len(times), float(np.median(times)))
    return out


def _time_one(bundle: Bundle, precision: str, tiles: np.ndarray, threads: int | None, budget_s: float) -> list[float]:
    """One session at a time, gone when this returns (a paper-preset model is 750 MB: two of them at once is memory
    a small machine may not have)."""
    from .ort import OrtBackend

    be = OrtBackend(bundle, precision, "ort-cpu", threads=threads)
    be.run(tiles)  # allocation and kernel choice on the first call
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < MIN_CALLS or (len(times) < MAX_CALLS and time.perf_counter() < end):
        t = time.perf_counter()
        be.run(tiles)
        times.append((time.perf_counter() - t) * 1e3)
    be.close()
    return times


def choose_cpu_precision(
    bundle: Bundle, *, threads: int | None = None, measure: Measure | None = None
) -> PrecisionChoice | None:
    """The precision `--precision auto` runs on onnxruntime's CPU, and why; None when no CPU artefact passed.
    `measure` stands in for `time_precisions` (tests give it the numbers to choose from)."""
    have = [p for p in CPU_PRECISIONS if bundle.has(ONNX, p)]
    passing = [p for p in have if bundle.parity_passed(p)]
    failed = [p for p in have if p not in passing]
    skipped = f"; {', '.join(failed)} skipped: failed parity at export" if failed else ""
    if not passing:
        return None
    if len(passing) == 1:
        only = passing[0]
        return PrecisionChoice(only, f"precision auto -> {only}: the only CPU precision that passed parity{skipped}")
    batch = min(max(bundle.batch.opt, bundle.batch.min), bundle.batch.max)
    key = _key(bundle, passing, threads, batch)
    path = cache_dir() / "precision" / f"{key_digest(key)}.json"
    record = _read(path, key)
    reused = record is not None
    if record is None:
        log.info("measuring %s on this CPU to choose the fastest (once per machine and bundle)", ", ".join(passing))
        times = (measure or time_precisions)(bundle, passing, threads=threads, batch=batch)
        record = {
            "schema": SCHEMA,
            "key": key,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "p50_ms": {p: float(np.median(times[p])) for p in passing},
            "calls": {p: len(times[p]) for p in passing},
        }
        _write(path, record)
    p50 = record["p50_ms"]
    best = min(passing, key=lambda p: (p50[p], passing.index(p)))  # a tie keeps the table's order
    timings = ", ".join(f"{p} {_ms(p50[p])} ms" for p in sorted(passing, key=p50.get))
    reason = (
        f"precision auto -> {best}: fastest passing on {key['cpu']} ({timings} per batch of {batch}; "
        f"measured {record['measured'][:10]}, cache {shown(path)}){skipped}"
    )
    return PrecisionChoice(best, reason, dict(p50), path, reused)


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _key(bundle: Bundle, precisions: Sequence[str], threads: int | None, batch: int) -> dict:
    import onnxruntime as ort

    return {
        "artefacts": {p: bundle.artefact(ONNX, p).sha256 for p in precisions},
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "threads": threads or "default",
        "batch": batch,
    }


def _read(path: Path, key: dict) -> dict | None:
    """The cached record for `key`, or None (measure again); a file that is there but unusable is one warning."""
    record, problem = read_record(path, SCHEMA, key)
    if record is not None:
        p50 = record.get("p50_ms")
        if not isinstance(record.get("measured"), str) or not (
            isinstance(p50, dict) and all(isinstance(p50.get(p), (int, float)) and p50[p] > 0 for p in key["artefacts"])
        ):
            record, problem = None, "its timings are missing or not positive numbers"
    if problem:
        log.warning("precision cache %s: %s; measuring again", path, problem)
    return record


def _write(path: Path, record: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except Co2SOutputError as e:  # a read-only home is no reason to stop: the next run measures again
        log.warning("precision cache not saved (%s); the next run measures again", e)
