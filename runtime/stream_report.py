"""The summary of a stream run: counts by drop reason, latency percentiles, achieved against source rate, the
real-time factor and the device stamp (as co2s-bench stamps its numbers), as JSON and Markdown.

real_time_factor: seconds of source time covered per second of wall time (frame timestamps when the source has
them, else decoded frames / source fps); 1.0 means the loop kept pace with the camera or the paced file.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from .profiler import current_host_memory_mb, device_stamp, library_versions, peak_host_memory_mb, stage_stats

SCHEMA = "co2s.runtime.stream/1"


def jetson_sensors() -> dict:
    """Power and temperatures sampled once: jtop (jetson-stats) when importable, else one tegrastats line;
    {"source": None} where neither exists (not a Jetson)."""
    try:
        from jtop import jtop  # type: ignore[import-not-found]

        with jtop() as j:
            stats = dict(j.stats)
        return {"source": "jtop", "stats": {k: str(v) for k, v in stats.items()}}
    except Exception:  # noqa: BLE001 - not installed, or no jtop service: try tegrastats
        pass
    exe = shutil.which("tegrastats")
    if exe is None:
        return {"source": None, "note": "absent: neither jtop (jetson-stats) nor tegrastats found"}
    try:
        proc = subprocess.Popen([exe, "--interval", "200"], stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline().strip()
        finally:
            proc.kill()
            proc.wait(timeout=5)
        return {"source": "tegrastats", "line": line}
    except OSError as e:
        return {"source": None, "note": f"tegrastats failed: {e}"}


def build_summary(fs) -> dict:
    """`fs`: a FrameStream (after or during its run)."""
    c = fs.counter
    end = fs._t_end or time.perf_counter()
    wall = max(1e-9, end - (fs._t_start or end))
    src_fps = fs.source.fps
    if fs._first_pts is not None and fs._last_pts is not None and c.processed > 1 and src_fps:
        covered = fs._last_pts - fs._first_pts + 1.0 / src_fps
    elif src_fps:
        covered = c.decoded / src_fps
    else:
        covered = None
    lat = stage_stats(fs._latency)
    info = fs.backend.info()
    return {
        "schema": SCHEMA,
        "source": str(fs.source.address),
        "source_kind": fs.source.address.kind,
        "live": fs.source.live,
        "policy": {
            "drop": fs.drop,
            "stride": fs.options.stride,
            "realtime": fs.options.realtime,
            "frame_scale": fs.options.frame_scale,
            "reconnect": fs.options.reconnect,
        },
        "frames": {
            "decoded": c.decoded,
            "processed": c.processed,
            "dropped": {**c.dropped, "corrupt": fs.source.corrupt},  # the source's count, final
        },
        "reconnects": c.reconnects,
        "latency_ms": {k: lat[k] for k in ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "stages_ms": {k: stage_stats(v) for k, v in fs._stage_samples.items()},
        "source_fps": src_fps,
        "achieved_fps": c.processed / wall,
        "real_time_factor": None if covered is None else covered / wall,
        "wall_s": wall,
        "tile": fs.segment.tile,
        "overlap": fs.segment.overlap,
        "batch": fs.segment.batch,
        "backend": info.name,
        "precision": fs.backend.precision,
        "device": device_stamp(use_gpu=fs.backend.on_gpu),
        "jetson_sensors": jetson_sensors(),
        "versions": library_versions(),
        "host_memory_mb": {"current": current_host_memory_mb(), "peak": peak_host_memory_mb()},
    }


def _f(v, nd: int = 1) -> str:
    return "—" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def render_markdown(s: dict) -> str:
    d = s["device"]
    dev = d.get("gpu") or f"{d.get('cpu')} ({d.get('cpu_cores')} cores)"
    if d.get("jetson_power_mode"):
        dev += f", power mode {d['jetson_power_mode']}"
    f, p, lat = s["frames"], s["policy"], s["latency_ms"]
    drops = ", ".join(f"{k} {v}" for k, v in f["dropped"].items())
    lines = [
        "# co2s-stream summary",
        "",
        f"- source: `{s['source']}` ({s['source_kind']}, {'live' if s['live'] else 'recorded'})",
        f"- policy: drop {p['drop']}, stride {p['stride']}, realtime {p['realtime']}, frame scale {p['frame_scale']}",
        f"- backend: {s['backend']} {s['precision']}, tile {s['tile']}, overlap {s['overlap']}, batch {s['batch']}",
        f"- device: {dev}; sensors: {s['jetson_sensors'].get('source') or 'absent'}",
        f"- frames: {f['decoded']} decoded, {f['processed']} processed; dropped: {drops}; reconnects {s['reconnects']}",
        f"- rate: {_f(s['achieved_fps'], 2)} fps achieved vs {_f(s['source_fps'], 2)} fps source; "
        f"real-time factor {_f(s['real_time_factor'], 2)}; wall {s['wall_s']:.2f} s",
        "",
        "| capture → result latency | p50 ms | p90 ms | p99 ms | max ms | mean ms |",
        "|---|---|---|---|---|---|",
        f"| all processed frames ({lat['count']}) | {_f(lat['p50_ms'])} | {_f(lat['p90_ms'])} | "
        f"{_f(lat['p99_ms'])} | {_f(lat['max_ms'])} | {_f(lat['mean_ms'])} |",
        "",
        "| stage | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name, st in s["stages_ms"].items():
        lines.append(
            f"| {name} | {_f(st['p50_ms'], 2)} | {_f(st['p90_ms'], 2)} | {_f(st['p99_ms'], 2)} | "
            f"{_f(st['max_ms'], 2)} |"
        )
    return "\n".join(lines) + "\n"
