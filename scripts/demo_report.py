"""Assemble `make demo`'s report.md from what the CLIs wrote: metrics.csv, the bundle manifest, bench.json/.md,
the infer profile, co2s-stream's flight outputs (summary.json, overlay.mp4, footprints.gpkg). Nothing here
measures anything itself; it only reads and plots."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
from pathlib import Path

from co2s.bundle import load_bundle
from co2s.bundle.formats import PRECISIONS
from co2s.files import atomic_write, atomic_write_text

STRIP_FRAMES = 5
# Why co2s-stream drops a frame (summary.json "frames" -> "dropped"), for the report's reader.
DROP_REASONS = {
    "behind": "a newer frame arrived while the model was busy (--drop latest keeps only the newest)",
    "stride": "skipped by --stride",
    "corrupt": "undecodable packets, or frames missing from the video's timeline",
    "stopped": "decoded but not processed when the run stopped (end, --max-frames or a signal)",
}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def _training(out: Path) -> tuple[str, list[dict]]:
    rows = list(csv.DictReader((out / "run" / "metrics.csv").open()))
    students = [k[len("miou_") :] for k in rows[0] if k.startswith("miou_")]
    _plot_curve(rows, students, out / "training_curve.png")
    best = max(rows, key=lambda r: float(r.get("miou_fused") or 0))
    lines = ["| iteration | " + " | ".join(f"mIoU {s}" for s in students) + " |", "|---" * (len(students) + 1) + "|"]
    for r in rows:
        mark = " (best)" if r is best else ""
        lines.append(
            f"| {r['iteration']}{mark} | " + " | ".join(f"{float(r['miou_' + s]):.2f}" for s in students) + " |"
        )
    return "\n".join(lines), rows


def _plot_curve(rows: list[dict], students: list[str], path: Path) -> None:
    plt = _pyplot()
    it = [int(r["iteration"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(it, [float(r["loss"]) for r in rows], marker="o")
    a.set(title="training loss (mean since previous evaluation)", xlabel="iteration")
    for s in students:
        b.plot(it, [float(r["miou_" + s]) for r in rows], marker="o", label=s)
    b.set(title="val mIoU (%)", xlabel="iteration")
    b.legend()
    _save_figure(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    _pyplot().close(fig)


def _parity(bundle: Path) -> str:
    m = json.loads((bundle / "co2s.json").read_text())
    lines = [
        "| precision | reference | pixel agreement | threshold | mIoU delta | passed |",
        "|---|---|---|---|---|---|",
    ]
    written = load_bundle(bundle).precisions("onnx")
    for p in PRECISIONS:
        r = m["parity"].get(p)
        if r:
            delta = r.get("miou_delta")
            verdict = "yes" if r["passed"] else "NO" if p in written else "NO: left out of the bundle"
            lines.append(
                f"| {p} | {r['reference']} | {100 * r['pixel_agreement']:.3f} % | {100 * r['threshold']:.2f} % | "
                f"{'' if delta is None else f'{delta:+.2f}'} | {verdict} |"
            )
    sizes = {p: a.get("bytes") for p, a in m["artifacts"].items() if isinstance(a, dict)}
    size_txt = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items() if v)
    return "\n".join(lines) + (f"\n\nArtefacts: {size_txt}." if size_txt else "")


def _importable(module: str) -> bool:
    """Whether `import module` works (as demo_flight.sh decides what to run)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _flight(out: Path) -> str:
    """The flight section: overlay strip, co2s-stream's summary tables, drops and why, footprint map."""
    flight = out / "flight"
    if not (flight / "summary.json").is_file():
        if not _importable("av"):
            return "Skipped: PyAV is not installed (`pip install 'co2s[video]'`)."
        return f"Skipped: no `{flight}/summary.json` (the flight step did not run)."
    from co2s.runtime.stream_report import render_markdown

    summary = json.loads((flight / "summary.json").read_text())
    # co2s-stream's own summary (source, policy, device, rates, latency tables) under this report's heading
    stream_md = render_markdown(summary).split("\n", 2)[2]
    f = summary["frames"]
    drops = [f"| {reason} | {n} | {DROP_REASONS.get(reason, '')} |" for reason, n in f["dropped"].items()]
    p, fps = summary["policy"], summary["source_fps"]
    pacing = f", paced at the file's {fps:.0f} fps as the live camera would deliver it" if p["realtime"] else ""
    return f"""A {f["decoded"] / fps:.0f}-second synthetic nadir flight (`{out}/flight.mp4`, telemetry \
`{out}/flight.csv`) through `co2s-stream{" --realtime" if p["realtime"] else ""} --drop {p["drop"]}`{pacing}. \
Outputs in `{flight}`.

![overlay frames](flight_strip.png)

{_overlay_strip(flight / "overlay.mp4", out / "flight_strip.png")}

{stream_md}
| dropped | frames | why |
|---|---|---|
{chr(10).join(drops)}

### Footprints (`{flight}/footprints.gpkg`)

{_footprint_map(flight / "footprints.gpkg", out / "flight_footprints.png")}
"""


def _overlay_strip(video: Path, path: Path) -> str:
    """STRIP_FRAMES frames evenly spaced through overlay.mp4, side by side in one PNG."""
    import av
    import numpy as np
    from PIL import Image

    with av.open(str(video)) as c:
        frames = [(fr.time, fr.to_ndarray(format="rgb24")) for fr in c.decode(video=0)]
    picked = [frames[round(i * (len(frames) - 1) / (STRIP_FRAMES - 1))] for i in range(STRIP_FRAMES)]
    gap = np.full((picked[0][1].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([x for _, rgb in picked for x in (rgb, gap)][:-1], axis=1)
    atomic_write(path, lambda f: Image.fromarray(strip).save(f, format="PNG"))
    times = ", ".join(f"{t:.1f}" for t, _ in picked)
    return f"{STRIP_FRAMES} of the {len(frames)} frames of `{video.name}` (at {times} s): classes over the frame."


def _footprint_map(gpkg: Path, path: Path) -> str:
    """The footprints.gpkg polygons over the flight, coloured by time, drawn with matplotlib."""
    if not (_importable("pyogrio") and _importable("shapely")):
        return "Skipped: the geo extra is not installed (`pip install 'co2s[geo]'`), so no frame was placed."
    if not gpkg.is_file():
        return f"Skipped: no `{gpkg.name}` (no processed frame was placed: no telemetry, or every frame off nadir)."
    import numpy as np
    import shapely
    from pyogrio.raw import read

    meta, _, wkb, fields = read(str(gpkg))
    columns = dict(zip(meta["fields"], fields))
    polygons = shapely.from_wkb(wkb)
    times = columns["time_s"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    cmap = plt.get_cmap("viridis")
    span = max(float(times.max() - times.min()), 1e-9)
    x0, y0 = shapely.bounds(polygons[0])[:2]  # metres from the first footprint's corner: readable ticks
    for poly, t in zip(polygons, times):
        x, y = poly.exterior.xy
        colour = cmap((t - times.min()) / span)
        ax.fill(np.asarray(x) - x0, np.asarray(y) - y0, color=colour, alpha=0.15)
        ax.plot(np.asarray(x) - x0, np.asarray(y) - y0, color=colour, lw=0.8)
    centres = shapely.centroid(polygons)
    ax.plot(shapely.get_x(centres) - x0, shapely.get_y(centres) - y0, "k.-", lw=0.8, ms=3, label="frame centres")
    ax.set(
        xlabel=f"easting (m from {x0:.0f}, {meta['crs']})",
        ylabel=f"northing (m from {y0:.0f})",
        title="ground footprint of each processed frame",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(times.min(), times.max()))
    fig.colorbar(sm, ax=ax, label="time (s)", shrink=0.8)
    _save_figure(fig, path)
    across = shapely.bounds(polygons[0])[2] - shapely.bounds(polygons[0])[0]
    return (
        f"![footprints](flight_footprints.png)\n\n{len(polygons)} polygons, one per placed frame ({meta['crs']}); "
        f"each {across:.0f} m across; mean confidence {float(columns['mean_confidence'].mean()):.3f}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--wall-seconds", type=int)
    args = ap.parse_args()
    out = args.out
    train_table, _ = _training(out)
    bench_md = (out / "bench.md").read_text() if (out / "bench.md").exists() else "(no bench.md)"
    # The summary table only; per-stage tables stay in bench.md. Demote its title under this report's heading.
    bench_md = bench_md.split("\n## ")[0].replace(
        "# co2s-bench\n", f"Full report with per-stage timings: `{out}/bench.md`.\n"
    )
    profile_md = (out / "profile.md").read_text() if (out / "profile.md").exists() else "(no profile.md)"
    report = f"""# co2s demo report

Machine: {_machine()}.{f" Wall time of the whole demo: {args.wall_seconds // 60} min {args.wall_seconds % 60} s." if args.wall_seconds else ""}

## Training (`{out}/run`)

![training curve](training_curve.png)

{train_table}

## Export parity (`{out}/bundle/co2s.json`)

{_parity(out / "bundle")}

## Latency and throughput per precision (`co2s-bench`)

{bench_md}

## Large-scene inference (`co2s-infer`, `{out}/scene.png`)

Outputs: `scene.labels.png` (class index), `scene.overlay.png` (classes over the image), `scene.confidence.png`.

{profile_md}

## Onboard flight (`co2s-stream`)

{_flight(out)}"""
    atomic_write_text(out / "report.md", report)
    print(f"report: {out / 'report.md'}")
    for name in (
        "scene.png",
        "scene.labels.png",
        "scene.overlay.png",
        "scene.confidence.png",
        "training_curve.png",
        "flight/summary.json",
        "flight/overlay.mp4",
        "flight/footprints.gpkg",
        "flight_strip.png",
        "flight_footprints.png",
        "bundle/co2s.json",
        "run/best.pt",
    ):
        print(f"  {out / name}{'' if (out / name).exists() else '  (missing)'}")


if __name__ == "__main__":
    main()
