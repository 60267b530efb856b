"""Pipelined inference over many inputs: readers -> batcher/inference -> stitcher/writer, on separate threads.

    job queue -> reader threads (decode, windowed read, band/stretch, pad)        -> tile queue (bounded)
              -> inference thread (batches of up to B tiles, `in_flight` batches queued on the backend)
                                                                                   -> result queue (bounded)
              -> writer thread (stitch in grid order, strips to the sink, commit = rename into place)

Bounded queues keep memory flat and let reading, inference and writing overlap (the backends release the GIL).
Tiles of different inputs share batches, so folders of small images still fill the batch. A bad input is
reported and skipped (or stops the run with fail_fast); its temporary outputs are removed, never renamed.

Threads and memory: one backend can serve several runs at once (`InferencePipeline.run` and `predict_array`
may be called from several threads, sharing the backend and even the pipeline object): every run gets its own
queues, threads and per-input state, and the outputs a run needs are passed with each backend call rather than
set on the backend. A finished input drops its decoded image, output buffers and stitcher at once (they form a
reference cycle through the stitcher's callback, which would otherwise wait for the cyclic garbage collector and
let host memory climb by whole images in a long-running process). On glibc, the first pipeline also fixes the
allocator's mmap threshold at 1 MB (`limit_heap_retention`) so image-sized buffers freed by one thread go back
to the OS instead of staying in that thread's heap, and finished inputs and runs hand free heap pages back
(`release_free_heap`); see benchmarks/soak.py. CO2S_MALLOC_TUNING=0 opts out of both.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from co2s.bundle import Bundle
from co2s.errors import Co2SError, Co2SInputError, output_error
from co2s.files import atomic_write_text

from .backends import Backend
from .heap import limit_heap_retention, release_free_heap
from .io import IMAGE_EXTENSIONS, InputOptions, RasterSource, Sink, open_sink, open_source
from .io.areas import FIELDS, ClassCounts, combined_rows, pixel_area, rows_csv, write_areas
from .io.vector import VECTOR_FORMATS, MinArea, write_polygons
from .profiler import StageProfiler
from .tiling import Stitcher, TileGrid, TileWindow, pad_to_tile

log = logging.getLogger("co2s.runtime")
STOP_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})  # write failures that end a folder run


_STOP_GRACE_S = 30.0  # how long a stopped run waits for its threads before exiting anyway


@dataclass(frozen=True)
class InferOptions:
    overlap: int | None = None  # pixels; None = tile/6
    blend: bool | None = None  # None/True: blend overlaps (probs when the bundle has them, else votes)
    confidence: bool = True
    overlay: bool = True
    input: InputOptions = field(default_factory=InputOptions)
    skip_existing: bool = False
    fail_fast: bool = False
    batch: int | None = None  # tiles per batch; None = the backend's opt batch
    readers: int = 2
    overviews: bool = True  # GeoTIFF outputs get internal overviews
    cog: bool = False  # GeoTIFF outputs are Cloud-Optimized GeoTIFFs (GDAL's COG driver)
    vector: str | None = None  # "gpkg" | "geojson": NAME.polygons.* (io/vector.py)
    min_area: MinArea | None = None  # polygons smaller than this are left out
    simplify: float | None = None  # polygon simplification tolerance, map units


@dataclass(frozen=True)
class JobSpec:
    input: Path
    rel_stem: Path  # output name without suffix, relative to the output folder (see output_stems)
    refused: str = ""  # why this input is not run (its outputs would overwrite another input's)


@dataclass
class JobResult:
    input: Path
    status: str  # ok | failed | skipped
    message: str = ""
    outputs: list[Path] = field(default_factory=list)
    tiles: int = 0
    size: tuple[int, int] | None = None  # (height, width)
    seconds: float = 0.0
    areas: list[dict] | None = None  # the rows of NAME.areas.csv
    name: str = ""  # output name relative to the output folder (rel_stem)


@dataclass
class RunSummary:
    results: list[JobResult]
    wall_s: float
    ignored: list[Path] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before every input was processed

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            out[r.status] += 1
        return out


class Progress:
    """Hooks the CLI fills in (tqdm); the default does nothing."""

    def add_total(self, tiles: int) -> None: ...

    def update(self, tiles: int) -> None: ...

    def job_done(self, result: JobResult) -> None: ...


# --- inputs -----------------------------------------------------------------------------------------------------


def collect_inputs(
    inputs: Iterable[str | os.PathLike], *, unique_outputs: bool = True
) -> tuple[list[JobSpec], list[Path]]:
    """Files as given, folders walked (sorted) for image extensions; returns (jobs, ignored files in folders).

    Output names (see `output_stems`): a folder's tree is mirrored under the output folder, a file given by itself
    lands at its top; inputs that share a stem in one output folder keep their extension. A missing path is an
    error right away (a typo in the command, known before any work); an input whose outputs would still overwrite
    another's is refused (`JobSpec.refused`, listed in the run's summary), never the whole run."""
    found: list[tuple[Path, Path]] = []  # (input, output folder relative to --out)
    ignored: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    fp = Path(root) / f
                    if f.startswith("."):
                        continue
                    if fp.suffix.lower() in IMAGE_EXTENSIONS:
                        found.append((fp, fp.parent.relative_to(p)))
                    else:
                        ignored.append(fp)
        elif p.exists() or p.is_symlink():
            found.append((p, Path()))
        else:
            raise Co2SInputError(f"{p}: no such file or folder")
    if not unique_outputs:
        return [JobSpec(fp, folder / fp.stem) for fp, folder in found], ignored
    return output_stems(found), ignored


def output_stems(found: list[tuple[Path, Path]]) -> list[JobSpec]:
    """The naming rule, in input order: `<folder>/<stem>` unless another input in the same output folder has the
    same stem and another extension (compared case-blind, as on macOS and Windows file systems), then
    `<folder>/<stem>.<ext>` for each of them (IMG_1.JPG and IMG_1.tif -> IMG_1.JPG.labels.png, IMG_1.tif.labels.tif). The same file given twice runs
    once; a name that still collides (the same file name from two arguments) is refused for the later input."""
    seen_files: set[Path] = set()
    unique: list[tuple[Path, Path]] = []
    for fp, folder in found:
        key = fp.resolve()
        if key not in seen_files:
            seen_files.add(key)
            unique.append((fp, folder))
    names: dict[tuple[str, str], set[str]] = {}  # file names per (output folder, stem)
    for fp, folder in unique:
        names.setdefault((str(folder).casefold(), fp.stem.casefold()), set()).add(fp.name.casefold())
    jobs: list[JobSpec] = []
    taken: dict[str, Path] = {}
    for fp, folder in unique:
        keep_ext = len(names[(str(folder).casefold(), fp.stem.casefold())]) > 1
        rel = folder / (fp.name if keep_ext else fp.stem)
        key = str(rel).casefold()
        if key in taken:
            jobs.append(
                JobSpec(
                    fp,
                    rel,
                    refused=f"{fp}: would write the same outputs as {taken[key]} ({rel}.labels.*); "
                    f"pass it in a separate run with another --out",
                )
            )
            continue
        taken[key] = fp
        jobs.append(JobSpec(fp, rel))
    return jobs


def existing_outputs(out_dir: Path, spec: JobSpec) -> bool:
    base = Path(out_dir) / spec.rel_stem
    return any(base.with_name(base.name + ".labels" + ext).exists() for ext in (".png", ".tif"))


# --- messages between the threads -------------------------------------------------------------------------------


class _Job:
    def __init__(self, spec: JobSpec, index: int):
        self.spec, self.index = spec, index
        self.source: RasterSource | None = None
        self.size: tuple[int, int] | None = None  # (height, width), kept after the source is released
        self.grid: TileGrid | None = None
        self.total = -1
        self.done = 0
        self.failed = False
        self.sink: Sink | None = None
        self.stitcher: Stitcher | None = None
        self.write_in_stitch = 0.0
        self.counts = ClassCounts()  # pixels per class, for NAME.areas.*
        self.areas: list[dict] | None = None
        self.t0 = time.perf_counter()

    def release(self) -> None:
        """Drop the decoded image, output buffers and stitcher now: the stitcher's callback refers back to the
        job, so left alone they would be freed only by the cyclic garbage collector, an image at a time later."""
        self.source = self.sink = self.stitcher = None


@dataclass
class _Tile:
    job: _Job
    win: TileWindow
    pixels: np.ndarray | None  # (tile, tile, 3) uint8; None when skipped
    valid: np.ndarray | None

    @property
    def compute(self) -> bool:
        return self.pixels is not None


@dataclass
class _TileResult:
    job: _Job
    win: TileWindow
    outputs: dict[str, np.ndarray] | None
    valid: np.ndarray | None


@dataclass
class _JobFailed:
    job: _Job
    message: str


_DONE = object()


class InferencePipeline:
    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        out_dir: str | os.PathLike,
        options: InferOptions = InferOptions(),
        *,
        profiler: StageProfiler | None = None,
        progress: Progress | None = None,
    ):
        self.bundle, self.backend, self.options = bundle, backend, options
        self.out_dir = Path(out_dir)
        self.tile = bundle.tile
        self.overlap = options.overlap if options.overlap is not None else round(self.tile / 6)
        # blending is the default: the bundle's probabilities when it outputs them, else each tile's vote
        # (tiling.vote_probs); the most-central rule leaves seams (benchmarks/seams.py)
        self.blend = True if options.blend is None else options.blend
        self.use_probs = self.blend and "probs" in backend.outputs
        bmax = backend.batch.max
        self.batch = min(options.batch or backend.batch.opt or 1, bmax)
        if options.batch and options.batch > bmax:
            log.warning("--batch %d is above what this model takes (%d); using %d", options.batch, bmax, bmax)
        # passed with every backend call (not set on the backend, which other runs may share)
        self._needed = frozenset(
            {"labels"}
            | ({"confidence"} if options.confidence or self.blend else set())
            | ({"probs"} if self.use_probs else set())
        )
        self.profiler = profiler or StageProfiler(enabled=False)
        self.progress = progress or Progress()
        limit_heap_retention()
        self._new_run_state()

    def _new_run_state(self) -> None:
        """Queues, flags and per-input bookkeeping of one run."""
        qsize = max(4, 2 * self.batch * max(1, self.backend.in_flight))
        self._tiles: queue.Queue = queue.Queue(maxsize=qsize)
        self._results: queue.Queue = queue.Queue(maxsize=qsize)
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._stop_reason = "after a failure (--fail-fast)"
        self._lock = threading.Lock()
        self._readers_left = 0
        self._fatal: BaseException | None = None
        self._results_by_job: dict[int, JobResult] = {}
        self._open_jobs: dict[int, _Job] = {}

    # --- public ---------------------------------------------------------------------------------------------

    def run(self, specs: list[JobSpec], ignored: list[Path] | None = None) -> RunSummary:
        """Run the inputs; may be called again, and from several threads at once (each call runs on its own
        copy of the per-run state; the backend, bundle, options, profiler and progress are shared)."""
        r = copy.copy(self)
        r._new_run_state()
        return r._run(specs, ignored)

    def _run(self, specs: list[JobSpec], ignored: list[Path] | None) -> RunSummary:
        t0 = time.perf_counter()
        todo = []
        for i, spec in enumerate(specs):
            if spec.refused:
                self._finish(i, JobResult(spec.input, "failed", spec.refused))
            elif self.options.skip_existing and existing_outputs(self.out_dir, spec):
                self._finish(i, JobResult(spec.input, "skipped", "outputs exist (--skip-existing)"))
            else:
                todo.append(_Job(spec, i))
        for job in todo:
            self._jobs.put(job)
        n_readers = max(1, min(self.options.readers, len(todo))) if todo else 0
        self._readers_left = n_readers
        threads = [
            threading.Thread(target=self._read_loop, name=f"co2s-read-{k}", daemon=True) for k in range(n_readers)
        ]
        threads += [
            threading.Thread(target=self._infer_loop, name="co2s-infer", daemon=True),
            threading.Thread(target=self._write_loop, name="co2s-write", daemon=True),
        ]
        if not todo:
            threads = []
        self.profiler.start()
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short joins keep Ctrl-C responsive
        except BaseException:
            self._stop.set()
            self._abort_open_jobs()
            # let the batch in flight finish: a thread still inside onnxruntime when the interpreter exits
            # aborts the process ("terminate called without an active exception") instead of exiting 130
            for t in threads:
                if t.is_alive():
                    t.join(_STOP_GRACE_S)
            raise
        finally:
            self.profiler.stop()
            release_free_heap(force=True)
        if self._fatal is not None:
            self._abort_open_jobs()
            raise self._fatal
        for job in todo:  # never started: the run stopped first
            if job.index not in self._results_by_job:
                self._results_by_job[job.index] = JobResult(
                    job.spec.input, "skipped", f"not started, the run stopped {self._stop_reason}"
                )
        results = [self._results_by_job[i] for i in sorted(self._results_by_job)]
        with_areas = [(r.name, r.areas) for r in results if r.status == "ok" and r.areas is not None]
        if len(specs) > 1 and with_areas:
            self._write_combined_areas(with_areas)
        return RunSummary(
            results, time.perf_counter() - t0, list(ignored or []), self._stop_reason if self._stop.is_set() else None
        )

    def _write_combined_areas(self, per_input: list[tuple[str, list[dict]]]) -> None:
        """A folder run's `areas.csv` / `areas.json` at the top of the output folder: every input's class areas
        and the totals (rewritten by each run over the inputs that run labelled)."""
        rows = combined_rows(per_input)
        atomic_write_text(self.out_dir / "areas.csv", rows_csv(rows, ("input", *FIELDS)))
        atomic_write_text(self.out_dir / "areas.json", json.dumps({"rows": rows}, indent=2) + "\n")

    # --- readers ----------------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                self._read_job(job)
        finally:
            with self._lock:
                self._readers_left -= 1
                last = self._readers_left == 0
            if last:
                self._tiles.put(_DONE)

    def _read_job(self, job: _Job) -> None:
        prof, T = self.profiler, self.tile
        try:
            t = time.perf_counter()
            # a local reference: the writer releases job.source when the input finishes or fails
            src = job.source = open_source(job.spec.input, self.options.input)
            job.size = (src.height, src.width)
            prof.add("read", time.perf_counter() - t)
            job.grid = TileGrid(src.height, src.width, T, self.overlap)
            windowed = src.windowed  # in-memory sources were decoded by the open above
            with self._lock:
                self._open_jobs[job.index] = job
            job.total = len(job.grid)
            self.progress.add_total(job.total)
            for win in job.grid:
                if self._stop.is_set() or job.failed:  # failed: the writer drops its tiles anyway
                    return
                t0 = time.perf_counter()
                pixels, valid = src.read(win.y0, win.x0, win.h, win.w)
                t1 = time.perf_counter()
                if windowed:
                    prof.add("read", t1 - t0)
                if valid is not None and not valid.any():
                    item = _Tile(job, win, None, valid)  # all nodata: no inference
                else:
                    item = _Tile(job, win, pad_to_tile(pixels, T), valid)
                    prof.add("preprocess", time.perf_counter() - t1)
                self._tiles.put(item)
        except Co2SInputError as e:
            self._tiles.put(_JobFailed(job, str(e)))
        except MemoryError:
            self._tiles.put(_JobFailed(job, f"{job.spec.input}: out of memory while reading"))
        except Exception as e:
            log.debug("reader error", exc_info=True)
            self._tiles.put(_JobFailed(job, f"{job.spec.input}: unexpected {type(e).__name__}: {e}"))

    # --- inference --------------------------------------------------------------------------------------------

    def _infer_loop(self) -> None:
        inflight: deque = deque()
        finished = False
        try:
            while not finished:
                try:
                    item = self._tiles.get(timeout=None) if not inflight else self._tiles.get_nowait()
                except queue.Empty:
                    self._emit(*inflight.popleft())
                    continue
                if item is _DONE:
                    finished = True
                    break
                group, n = [item], int(isinstance(item, _Tile) and item.compute)
                while n < self.batch:
                    try:
                        nxt = self._tiles.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _DONE:
                        finished = True
                        break
                    group.append(nxt)
                    n += int(isinstance(nxt, _Tile) and nxt.compute)
                pending = None
                if n and not self._stop.is_set():
                    t = time.perf_counter()
                    tiles = np.stack([g.pixels for g in group if isinstance(g, _Tile) and g.compute])
                    self.profiler.add("preprocess", time.perf_counter() - t)
                    pending = self.backend.submit(tiles, self.profiler, outputs=self._needed)
                    self.profiler.count(tiles=n, batches=1)
                inflight.append((pending, group))
                while len(inflight) >= max(1, self.backend.in_flight):
                    self._emit(*inflight.popleft())
            while inflight:
                self._emit(*inflight.popleft())
        except BaseException as e:  # noqa: BLE001 - a backend failure is fatal for the run
            self._fatal = e
            self._stop.set()
            if not finished:
                self._drain(self._tiles)
        finally:
            self._results.put(_DONE)

    def _emit(self, pending, group: list) -> None:
        outs = pending.result() if pending is not None else {}
        outs = {k: v for k, v in outs.items() if k in self._needed}  # e.g. no probs unless blending
        i = 0
        for g in group:
            if isinstance(g, _JobFailed):
                self._results.put(g)
            elif g.compute and pending is None:  # stopped: drop
                continue
            elif g.compute:
                self._results.put(_TileResult(g.job, g.win, {k: v[i] for k, v in outs.items()}, g.valid))
                i += 1
            else:
                self._results.put(_TileResult(g.job, g.win, None, g.valid))

    @staticmethod
    def _drain(q: queue.Queue) -> None:
        """Consume until the readers' end marker (they see the stop flag and finish soon)."""
        while q.get() is not _DONE:
            pass

    # --- writer -----------------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            self._write_items()
        except BaseException as e:  # noqa: BLE001 - never leave the inference thread blocked on a full queue
            self._fatal = self._fatal or e
            self._stop.set()
            while self._results.get() is not _DONE:
                pass

    def _write_items(self) -> None:
        while True:
            item = self._results.get()
            if item is _DONE:
                break
            job = item.job
            if job.failed:
                continue
            if self._stop.is_set():  # queued tiles of a stopped run are dropped, not written
                self._fail(
                    job, f"{job.spec.input}: not finished, the run stopped {self._stop_reason}", status="skipped"
                )
                continue
            if isinstance(item, _JobFailed):
                self._fail(job, item.message)
                continue
            try:
                self._write_tile(job, item)
            except OSError as e:
                self._write_failed(job, output_error(e.filename or job.spec.input, e))
            except Co2SError as e:  # an output that cannot be written (Co2SOutputError), or a bad tile
                self._write_failed(job, e)
            except Exception as e:
                log.debug("writer error", exc_info=True)
                self._fail(job, f"{job.spec.input}: unexpected {type(e).__name__} while writing: {e}")
        # anything still open never got all its tiles (stopped early)
        with self._lock:
            left = list(self._open_jobs.values())
        for job in left:
            if not job.failed:
                self._fail(
                    job, f"{job.spec.input}: not finished, the run stopped {self._stop_reason}", status="skipped"
                )

    def _write_failed(self, job: _Job, e: Co2SError) -> None:
        self._fail(job, str(e))
        if getattr(e, "errno", None) in STOP_ERRNOS:  # every later output would fail the same way
            self._stop_reason = f"because the output disk is {'read-only' if e.errno == errno.EROFS else 'full'}"
            self._stop.set()

    def _write_tile(self, job: _Job, item: _TileResult) -> None:
        prof = self.profiler
        if job.sink is None:
            t = time.perf_counter()
            job.sink = open_sink(
                job.source,
                self.out_dir,
                job.spec.rel_stem,
                palette=self.bundle.palette,
                classes=list(self.bundle.classes),
                overlay=self.options.overlay,
                confidence=self.options.confidence,
                overviews=self.options.overviews,
                cog=self.options.cog,
            )
            self._add_products(job)
            prof.add("write", time.perf_counter() - t)

            def emit(y0, y1, labels, conf, _sink=job.sink, _job=job):
                t0 = time.perf_counter()
                _job.counts.add(labels)
                _sink.write_strip(y0, y1, labels, conf)
                dt = time.perf_counter() - t0
                prof.add("write", dt)
                _job.write_in_stitch += dt  # not postprocess time

            job.stitcher = Stitcher(
                job.grid,
                emit,
                blend=self.blend,
                num_classes=self.bundle.num_classes,
                with_confidence=self.options.confidence,
            )
        t = time.perf_counter()
        o = item.outputs
        if o is None:
            job.stitcher.add(item.win, None, valid=item.valid)
        else:
            job.stitcher.add(
                item.win, o["labels"], o.get("confidence"), o.get("probs") if self.use_probs else None, item.valid
            )
        prof.add("postprocess", time.perf_counter() - t - job.write_in_stitch)
        job.write_in_stitch = 0.0
        w = item.win
        prof.count(pixels=(w.keep_y[1] - w.keep_y[0]) * (w.keep_x[1] - w.keep_x[0]))
        job.done += 1
        self.progress.update(1)
        if job.done == job.total:
            t = time.perf_counter()
            outputs = job.sink.commit()
            prof.add("write", time.perf_counter() - t)
            self._close(job)
            self._finish(
                job.index,
                JobResult(
                    job.spec.input,
                    "ok",
                    "",
                    outputs,
                    job.total,
                    job.size,
                    time.perf_counter() - job.t0,
                    areas=job.areas,
                    name=str(job.spec.rel_stem),
                ),
            )

    def _add_products(self, job: _Job) -> None:
        """Files made from the finished rasters and committed with them: class areas (always), polygons."""
        base = self.out_dir / job.spec.rel_stem
        classes = list(self.bundle.classes)

        def areas(sink, _job=job):
            rows, pairs = write_areas(sink, _job.counts, classes, pixel_area(*sink.georeference()), base)
            _job.areas = rows
            return pairs

        job.sink.products.append(areas)
        fmt = self.options.vector
        if fmt:
            driver, ext = VECTOR_FORMATS[fmt]
            pa = pixel_area(*job.sink.georeference())
            m = self.options.min_area
            min_pixels = m.pixels(pa.m2, job.spec.input) if m is not None else 0.0  # before any file is made

            def polygons(sink):
                return write_polygons(
                    sink,
                    base.with_name(base.name + ".polygons" + ext),
                    driver=driver,
                    classes=classes,
                    pixel_m2=pa.m2,
                    min_pixels=min_pixels,
                    simplify=self.options.simplify,
                )

            job.sink.products.append(polygons)

    def _fail(self, job: _Job, message: str, status: str = "failed") -> None:
        job.failed = True
        if job.sink is not None:
            job.sink.abort()
        self._close(job)
        if job.total > job.done:
            self.progress.add_total(job.done - job.total)  # those tiles will never come
        self._finish(
            job.index, JobResult(job.spec.input, status, message, [], job.done, job.size, time.perf_counter() - job.t0)
        )
        if self.options.fail_fast and status == "failed":
            self._stop.set()

    def _close(self, job: _Job) -> None:
        with self._lock:
            self._open_jobs.pop(job.index, None)
        if job.source is not None:
            try:
                job.source.close()
            except Exception:  # noqa: BLE001
                pass
        job.release()
        release_free_heap()

    def _finish(self, index: int, result: JobResult) -> None:
        with self._lock:
            self._results_by_job[index] = result
        self.progress.job_done(result)

    def _abort_open_jobs(self) -> None:
        with self._lock:
            jobs = list(self._open_jobs.values())
        for job in jobs:
            if job.sink is not None:
                job.sink.abort()


def run_inference(
    bundle: Bundle,
    backend: Backend,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: InferOptions = InferOptions(),
    *,
    profiler: StageProfiler | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Library entry point: collect inputs, run the pipeline, return per-input results."""
    specs, ignored = collect_inputs(inputs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return InferencePipeline(bundle, backend, out_dir, options, profiler=profiler, progress=progress).run(
        specs, ignored
    )


def check_rgb_array(rgb) -> None:
    """predict_array takes what Pillow and rasterio-to-numpy users hold: uint8 height x width x 3."""
    if isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size and rgb.dtype == np.uint8:
        return
    shape = "x".join(map(str, getattr(rgb, "shape", ()))) or "no shape"
    got = f"{getattr(rgb, 'dtype', type(rgb).__name__)} {shape}"
    if isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size:
        hint = " (scale to 0-255 and convert first)"
    elif isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[0] == 3:
        hint = " (channels first: pass np.moveaxis(rgb, 0, -1))"
    else:
        hint = ""
    raise Co2SInputError(f"predict_array expects a uint8 HxWx3 RGB array, got {got}{hint}")


def predict_array(
    backend: Backend,
    rgb: np.ndarray,
    *,
    overlap: int | None = None,
    blend: bool = False,
    use_probs: bool = True,
    num_classes: int | None = None,
    valid: np.ndarray | None = None,
    batch: int | None = None,
) -> dict[str, np.ndarray]:
    """Tiled inference on an in-memory uint8 RGB image (no threads, no files): {'labels', 'confidence'}.
    The same grid and stitcher as the pipeline, for library use and for checking the pipeline against."""
    check_rgb_array(rgb)
    h, w = rgb.shape[:2]
    T = backend.tile
    grid = TileGrid(h, w, T, round(T / 6) if overlap is None else overlap)
    labels = np.empty((h, w), np.uint8)
    confidence = np.empty((h, w), np.float32)

    def emit(y0, y1, lab, conf):
        labels[y0:y1] = lab
        confidence[y0:y1] = conf

    if blend and num_classes is None:
        raise ValueError("blend needs num_classes")
    stitcher = Stitcher(grid, emit, blend=blend, num_classes=num_classes)
    use_probs = blend and use_probs and "probs" in backend.outputs  # otherwise blend votes (tiling.vote_probs)
    wanted = {"labels", "confidence"} | ({"probs"} if use_probs else set())  # per call: the backend may be shared
    B = min(batch or backend.batch.opt, backend.batch.max)
    wins = list(grid)
    for i in range(0, len(wins), B):
        chunk = wins[i : i + B]
        vals = [None if valid is None else valid[v.y0 : v.y0 + v.h, v.x0 : v.x0 + v.w] for v in chunk]
        run = [k for k, v in enumerate(vals) if v is None or v.any()]
        outs = {}
        if run:
            tiles = np.stack(
                [
                    pad_to_tile(rgb[chunk[k].y0 : chunk[k].y0 + chunk[k].h, chunk[k].x0 : chunk[k].x0 + chunk[k].w], T)
                    for k in run
                ]
            )
            outs = backend.run(tiles, outputs=wanted)
        j = 0
        for k, win in enumerate(chunk):
            if k in run:
                stitcher.add(
                    win, outs["labels"][j], outs["confidence"][j], outs["probs"][j] if use_probs else None, vals[k]
                )
                j += 1
            else:
                stitcher.add(win, None, valid=vals[k])
    return {"labels": labels, "confidence": confidence}
