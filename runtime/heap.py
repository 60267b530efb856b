"""Host memory in long-running processes (glibc): a fixed mmap threshold and periodic malloc_trim.

Used by the pipeline (runtime/pipeline.py); measured by benchmarks/soak.py. CO2S_MALLOC_TUNING=0 opts out, and an
environment that sets glibc's MALLOC_*_THRESHOLD_ variables is respected.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("co2s.runtime")

MMAP_THRESHOLD = 1 << 20  # buffers of 1 MB and more (whole images, output rasters, blend bands) are mmapped
TRIM_INTERVAL_S = 1.0  # at most one malloc_trim per second (after finished inputs), plus one per run
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_heap_lock = threading.Lock()
_heap_state: dict = {}


def _glibc():
    """libc through ctypes on Linux/glibc (None elsewhere, or with CO2S_MALLOC_TUNING=0); loaded once."""
    with _heap_lock:
        if "libc" not in _heap_state:
            _heap_state["libc"], _heap_state["last_trim"] = None, 0.0
            off = os.environ.get("CO2S_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off")
            import platform
            import sys

            if not off and sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
                try:
                    import ctypes

                    libc = ctypes.CDLL("libc.so.6")
                    libc.malloc_trim.argtypes = [ctypes.c_size_t]
                    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                    _heap_state["libc"] = libc
                except (OSError, AttributeError):
                    pass
        return _heap_state["libc"]


def limit_heap_retention() -> bool:
    """Keep host memory flat in a long-running process (glibc only; once per process; True when applied).

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which image-sized numpy
    buffers come from the per-thread heaps; with reader, inference and writer threads allocating and freeing
    them, those heaps keep fragmented free memory and RSS wanders from round to round (benchmarks/soak.py;
    benchmarks/results/soak.md and code_notes.md). Fixing the mmap threshold at 1 MB (what MALLOC_MMAP_THRESHOLD_
    does from the environment) hands image-sized blocks straight back to the OS, while per-tile buffers stay on
    the fast heap path. Opt out with CO2S_MALLOC_TUNING=0; an environment that sets the thresholds is respected.
    """
    libc = _glibc()
    if libc is None:
        return False
    with _heap_lock:
        if "tuned" not in _heap_state:
            env = "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            _heap_state["tuned"] = (
                not env
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
            )
            log.debug("glibc malloc: mmap threshold %d (%s)", MMAP_THRESHOLD, _heap_state["tuned"])
        return _heap_state["tuned"]


def release_free_heap(*, force: bool = False) -> None:
    """malloc_trim: give the free pages inside glibc's heaps back to the OS (after an input is finished; at most
    once per TRIM_INTERVAL_S unless forced, at the end of a run). A no-op off glibc or with CO2S_MALLOC_TUNING=0."""
    libc = _glibc()
    if libc is None:
        return
    now = time.monotonic()
    with _heap_lock:
        if not force and now - _heap_state["last_trim"] < TRIM_INTERVAL_S:
            return
        _heap_state["last_trim"] = now
    libc.malloc_trim(0)
