"""The one interface every backend implements: uint8 tiles in, labels/confidence(/probs) out.

`submit` queues a batch and returns a handle whose `result()` waits for it; a backend with real asynchrony
(native TensorRT: own stream and buffers per slot) lets the pipeline queue batch k+1 while batch k computes
(double buffering). The default runs synchronously inside `submit`.

Threading model: one backend = one loaded session (one per model and device per process). `run` and `submit`
may be called from several threads at once on the same backend; everything that varies per call (the tiles, the
outputs to copy back, the profiler) is an argument, never backend state. onnxruntime's `InferenceSession.run`
is thread-safe; the native TensorRT backend serialises each of its execution slots with a lock (an execution
context and its buffers serve one batch at a time). `want_outputs` sets a default for calls that pass no
`outputs`: configure it before sharing the backend, not while other threads run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from co2s.bundle import BatchSpec

from ..profiler import StageProfiler


class Pending:
    """A submitted batch; `result()` returns {output name: array of the submitted batch size}."""

    def __init__(self, outputs: dict[str, np.ndarray]):
        self._outputs = outputs

    def result(self) -> dict[str, np.ndarray]:
        return self._outputs


@dataclass(frozen=True)
class BackendInfo:
    name: str  # tensorrt | ort-trt | ort-cuda | ort-cpu
    precision: str
    providers: tuple[str, ...] = ()
    device: str | None = None
    notes: tuple[str, ...] = ()


class Backend(ABC):
    name: str
    precision: str
    tile: int
    batch: BatchSpec
    outputs: tuple[str, ...]
    in_flight: int = 1  # batches that may be queued before the oldest must be collected
    on_gpu: bool = False
    wanted: frozenset[str] | None = None  # outputs the caller uses (None: all); the rest is not copied back
    # set by open_backend: why this precision (a line for co2s-bench / --profile), and the seconds the opening
    # took (checksums, precision measurement, session creation): the first part of a cold start
    precision_reason: str | None = None
    open_s: float | None = None

    def want_outputs(self, names) -> None:
        """Default outputs to copy back for calls that pass no `outputs` (e.g. no `probs` unless blending: it is N
        times the labels' size). Backend-wide: set it before sharing the backend between threads."""
        self.wanted = frozenset(names) & frozenset(self.outputs) | {"labels"}

    def fetched_outputs(self, outputs: Iterable[str] | None = None) -> tuple[str, ...]:
        """Outputs one call copies back: `outputs` when given (plus labels), else the `want_outputs` default."""
        want = self.wanted if outputs is None else frozenset(outputs) | {"labels"}
        return tuple(o for o in self.outputs if want is None or o in want)

    @abstractmethod
    def run(
        self, tiles: np.ndarray, profiler: StageProfiler | None = None, *, outputs: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Blocking inference on uint8 [b, tile, tile, 3], 1 <= b <= batch.max; returns the `outputs` asked for
        (default: `want_outputs`, else all). Safe to call from several threads at once."""

    def submit(
        self, tiles: np.ndarray, profiler: StageProfiler | None = None, *, outputs: Iterable[str] | None = None
    ) -> Pending:
        return Pending(self.run(tiles, profiler, outputs=outputs))

    def check_tiles(self, tiles: np.ndarray) -> None:
        t = self.tile
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (t, t, 3):
            raise ValueError(f"expected uint8 [b, {t}, {t}, 3] tiles, got {tiles.dtype} {list(tiles.shape)}")
        if not 1 <= tiles.shape[0] <= self.batch.max:
            raise ValueError(f"batch of {tiles.shape[0]} outside this backend's 1..{self.batch.max}")

    def pad_batch(self, tiles: np.ndarray) -> np.ndarray:
        """Fixed-batch models take exactly batch.min tiles: pad with zeros (outputs are sliced back)."""
        b = tiles.shape[0]
        if b >= self.batch.min:
            return tiles
        pad = np.zeros((self.batch.min - b, *tiles.shape[1:]), tiles.dtype)
        return np.concatenate([tiles, pad], axis=0)

    def warmup(self, batches: int = 2, batch_size: int | None = None) -> None:
        """Run a few zero batches outside any profile (kernel selection, lazy allocation, engine build)."""
        b = batch_size or self.batch.opt
        x = np.zeros((b, self.tile, self.tile, 3), np.uint8)
        for _ in range(batches):
            self.run(x)

    @abstractmethod
    def info(self) -> BackendInfo: ...

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
