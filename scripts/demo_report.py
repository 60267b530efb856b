"""Assemble `make demo`'s report.md from what the CLIs wrote: metrics.csv, the bundle manifest, bench.json/.md,
the infer profile. Nothing here measures anything itself; it only reads and plots."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from pathlib import Path


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [int(r["iteration"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(it, [float(r["loss"]) for r in rows], marker="o")
    a.set(title="training loss (mean since previous evaluation)", xlabel="iteration")
    for s in students:
        b.plot(it, [float(r["miou_" + s]) for r in rows], marker="o", label=s)
    b.set(title="val mIoU (%)", xlabel="iteration")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _parity(bundle: Path) -> str:
    m = json.loads((bundle / "co2s.json").read_text())
    lines = [
        "| precision | reference | pixel agreement | threshold | mIoU delta | passed |",
        "|---|---|---|---|---|---|",
    ]
    for p in ("fp32", "fp16", "int8"):
        r = m["parity"].get(p)
        if r:
            delta = r.get("miou_delta")
            lines.append(
                f"| {p} | {r['reference']} | {100 * r['pixel_agreement']:.3f} % | {100 * r['threshold']:.2f} % | "
                f"{'' if delta is None else f'{delta:+.2f}'} | {'yes' if r['passed'] else 'NO'} |"
            )
    sizes = {p: a.get("bytes") for p, a in m["artifacts"].items() if isinstance(a, dict)}
    size_txt = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items() if v)
    return "\n".join(lines) + (f"\n\nArtefacts: {size_txt}." if size_txt else "")


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
"""
    (out / "report.md").write_text(report)
    print(f"report: {out / 'report.md'}")
    for name in (
        "scene.png",
        "scene.labels.png",
        "scene.overlay.png",
        "scene.confidence.png",
        "training_curve.png",
        "bundle/co2s.json",
        "run/best.pt",
    ):
        print(f"  {out / name}{'' if (out / name).exists() else '  (missing)'}")


if __name__ == "__main__":
    main()
