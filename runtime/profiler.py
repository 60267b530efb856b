"""Per-stage latency profiler and its reports (terminal table, JSON, Markdown).

Stages are timed per call (a tile for read/preprocess/postprocess/write, a batch for h2d/compute/d2h), so the
percentiles are latencies of one unit of work; throughput comes from the wall clock of the whole run, because the
pipeline overlaps stages on different threads and their sum is not the run time. Samples taken while
`profiler.warmup` is true are dropped: the first batches pay for kernel selection and allocation.

Threads: `add`/`count`/`report` are safe from any thread (the pipeline's readers, inference and writer threads
all record into one profiler). A profiler times one run: `start`/`stop` set its wall clock, so concurrent runs
should each get their own (sharing one merges their samples and gives one wall clock). Samples are kept as
8-byte doubles (about 56 bytes per tile with every stage timed), not Python floats.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("read", "preprocess", "h2d", "compute", "d2h", "postprocess", "write")
REPORT_SCHEMA = "co2s.runtime.profile/1"
PERCENTILES = (50, 90, 99)


@dataclass
class StageProfiler:
    """Thread-safe collector of per-stage durations plus tile and pixel counts."""

    enabled: bool = True
    warmup: bool = False
    samples: dict[str, array] = field(default_factory=lambda: {s: array("d") for s in STAGES})
    sources: dict[str, str] = field(default_factory=dict)  # stage -> "host-clock" | "cuda-events"
    tiles: int = 0
    pixels: int = 0
    batches: int = 0
    memory_at_start_mb: float | None = None
    _t0: float | None = None
    _t1: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float, *, source: str = "host-clock") -> None:
        if not self.enabled or self.warmup:
            return
        with self._lock:
            self.samples.setdefault(stage, array("d")).append(float(seconds))
            self.sources.setdefault(stage, source)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t)

    def count(self, *, tiles: int = 0, pixels: int = 0, batches: int = 0) -> None:
        if not self.enabled or self.warmup:
            return
        with self._lock:
            self.tiles += tiles
            self.pixels += pixels
            self.batches += batches

    def start(self) -> None:
        """Start the wall clock (after warm-up) and, when enabled, reset the process's peak-memory watermark where
        the OS allows it (a disabled profiler leaves that process-wide state alone)."""
        if self.enabled:
            reset_peak_host_memory()
        self.memory_at_start_mb = current_host_memory_mb()
        self._t0 = time.perf_counter()
        self._t1 = None

    def stop(self) -> None:
        self._t1 = time.perf_counter()

    @property
    def wall_s(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else time.perf_counter()) - self._t0

    def report(self, **meta: Any) -> dict:
        """The report dict: every stage and every field is always present (None where not applicable)."""
        wall = self.wall_s
        with self._lock:
            stages = {s: stage_stats(self.samples.get(s, []), self.sources.get(s)) for s in STAGES}
            extra = {s: stage_stats(v, self.sources.get(s)) for s, v in self.samples.items() if s not in STAGES}
            tiles, pixels, batches = self.tiles, self.pixels, self.batches
        rep = {
            "schema": REPORT_SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device": meta.pop("device", None) or device_stamp(),
            "backend": meta.pop("backend", None),
            "precision": meta.pop("precision", None),
            "versions": meta.pop("versions", None) or library_versions(),
            "tile": meta.pop("tile", None),
            "batch": meta.pop("batch", None),
            "warmup_batches": meta.pop("warmup_batches", None),
            "batches": batches,
            "tiles": tiles,
            "megapixels": pixels / 1e6,
            "wall_s": wall,
            "tiles_per_s": tiles / wall if wall > 0 else None,
            "megapixels_per_s": pixels / 1e6 / wall if wall > 0 else None,
            "peak_host_memory_mb": peak_host_memory_mb(),
            "host_memory_at_start_mb": self.memory_at_start_mb,  # what was resident before the run (libraries)
            "stages": stages,
        }
        if extra:
            rep["extra_stages"] = extra
        rep.update(meta)
        return rep


def stage_stats(values, source: str | None = None) -> dict:
    """count/total/mean/p50/p90/p99/max in milliseconds; None statistics when the stage never ran."""
    if len(values) == 0:
        return {
            "count": 0,
            "total_ms": 0.0,
            "mean_ms": None,
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "source": source,
        }
    a = np.asarray(values, dtype=np.float64) * 1e3
    p = np.percentile(a, PERCENTILES)
    return {
        "count": int(a.size),
        "total_ms": float(a.sum()),
        "mean_ms": float(a.mean()),
        "p50_ms": float(p[0]),
        "p90_ms": float(p[1]),
        "p99_ms": float(p[2]),
        "max_ms": float(a.max()),
        "source": source,
    }


# --- device and version stamps --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo `flags`, ARM `Features`); empty where the OS does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat start time against /proc/uptime), so that a
    cold start counts the interpreter and its imports too; None elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def jetson_power_mode() -> str | None:
    """`nvpmodel -q` first line (e.g. 'NV Power Mode: MAXN'); None off-Jetson. Recorded so numbers are comparable."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvpmodel -q failed)"
    m = re.search(r"Power Mode:\s*(.+)", out)
    return m.group(1).strip() if m else (out.strip().splitlines() or ["unknown"])[0]


def gpu_name() -> str | None:
    """Name of CUDA device 0 through pycuda or nvidia-smi; None when neither finds one."""
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        if cuda.Device.count() > 0:
            d = cuda.Device(0)
            cc = d.compute_capability()
            return f"{d.name()} (sm_{cc[0]}{cc[1]})"
    except Exception:  # noqa: BLE001 - no pycuda / no driver: fall through
        pass
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if out:
                return out.splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def device_stamp(*, use_gpu: bool | None = None) -> dict:
    """What ran the numbers. `use_gpu=False` skips the GPU probe (a CPU backend on a GPU host)."""
    gpu = gpu_name() if use_gpu is not False else None
    return {
        "gpu": gpu,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "jetson_power_mode": jetson_power_mode(),
        "platform": platform.platform(),
    }


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("co2s", "numpy", "onnxruntime", "onnxruntime-gpu", "tensorrt", "pycuda", "pillow", "rasterio"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


# --- host memory ----------------------------------------------------------------------------------------------


def reset_peak_host_memory() -> None:
    """Linux lets a process reset its RSS high-water mark (clear_refs 5); elsewhere the peak is since start."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_host_memory_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def peak_host_memory_mb() -> float | None:
    v = _proc_status_mb("VmHWM")
    if v is not None:
        return v
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)
    except (ImportError, OSError):
        return None


# --- rendering ------------------------------------------------------------------------------------------------


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _header_lines(rep: dict) -> list[str]:
    d = rep.get("device") or {}
    dev = d.get("gpu") or f"{d.get('cpu')} ({d.get('cpu_cores')} cores)"
    if d.get("jetson_power_mode"):
        dev += f", power mode {d['jetson_power_mode']}"
    v = rep.get("versions") or {}
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        f"device: {dev}",
        f"backend: {rep.get('backend')}  precision: {rep.get('precision')}  tile: {rep.get('tile')}  "
        f"batch: {rep.get('batch')}  warm-up batches (excluded): {rep.get('warmup_batches')}",
        f"versions: {vers}",
    ]


def cold_start_record(backend, startup_s: float | None, first_call_s: float | None) -> dict:
    """Where the time to the first result went: start-up (interpreter, imports, the bundle's manifest) before the
    backend opened, the opening (checksums, a precision measurement, session creation with what the optimised-graph
    cache did), the first backend call; `first_result_s` is their sum, None when a part was not timed."""
    opened = getattr(backend, "open_s", None)
    parts = (startup_s, opened, first_call_s)
    return {
        "startup_s": startup_s,
        "open_s": opened,
        "session_s": getattr(backend, "session_s", None),
        "graph_cache": getattr(backend, "graph_note", None),
        "first_call_s": first_call_s,
        "first_result_s": sum(parts) if all(v is not None for v in parts) else None,
    }


def choice_lines(rep: dict) -> list[str]:
    """The precision choice and the cold start of a report, one line each (when the report has them)."""
    lines = [rep["precision_choice"]] if rep.get("precision_choice") else []
    c = rep.get("cold_start")
    if c:
        session = f": session {_secs(c['session_s'])}" if c.get("session_s") is not None else ""
        graph = f", {c['graph_cache']}" if c.get("graph_cache") else ""
        first = "not timed (--warmup 0)" if c.get("first_call_s") is None else _secs(c["first_call_s"])
        total = "" if c.get("first_result_s") is None else f"{_secs(c['first_result_s'])} to the first result "
        start = "" if c.get("startup_s") is None else f"start-up {_secs(c['startup_s'])}, "
        lines.append(f"cold start: {total}({start}open {_secs(c['open_s'])}{session}{graph}; first batch {first})")
    return lines


def _secs(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.0f} ms" if v >= 0.01 else f"{v * 1e3:.1f} ms"


def _summary_line(rep: dict) -> str:
    return (
        f"{rep['tiles']} tiles, {rep['megapixels']:.1f} MP in {rep['wall_s']:.2f} s: "
        f"{_fmt(rep['tiles_per_s'])} tiles/s, {_fmt(rep['megapixels_per_s'])} MP/s; "
        f"peak host memory {_fmt(rep['peak_host_memory_mb'], 0)} MB"
    )


_COLS = ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")


def render_table(rep: dict) -> str:
    """Plain-text table for a terminal."""
    lines = _header_lines(rep)
    head = f"{'stage':<12}" + "".join(f"{c.replace('_ms', ' ms'):>10}" for c in _COLS) + "  timer"
    lines += [head, "-" * len(head)]
    for name, st in rep["stages"].items():
        lines.append(f"{name:<12}" + "".join(f"{_fmt(st[c]):>10}" for c in _COLS) + f"  {st.get('source') or ''}")
    lines.append(_summary_line(rep))
    return "\n".join(lines + choice_lines(rep))


def render_markdown(rep: dict) -> str:
    lines = ["# co2s runtime profile", ""] + [f"- {x}" for x in _header_lines(rep) + [_summary_line(rep)]]
    lines += [f"- {x}" for x in choice_lines(rep)] + [""]
    lines.append("| stage | " + " | ".join(c.replace("_ms", " (ms)") for c in _COLS) + " | timer |")
    lines.append("|---" * (len(_COLS) + 2) + "|")
    for name, st in rep["stages"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(st[c]) for c in _COLS) + f" | {st.get('source') or ''} |")
    return "\n".join(lines) + "\n"


def write_reports(rep: dict, stem: str) -> list[str]:
    """`stem.json` and `stem.md`; returns the paths written."""
    from co2s.files import atomic_write_text

    paths = [stem + ".json", stem + ".md"]
    atomic_write_text(paths[0], json.dumps(rep, indent=2, default=str))
    atomic_write_text(paths[1], render_markdown(rep))
    return paths
