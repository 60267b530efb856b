"""Co2S vs its baselines at equal iterations: fused and per-student val mIoU (issue 3's benchmark).

    python benchmarks/train_compare.py            # synthetic (~10 % labels) and dubai (1/8, by tile), tiny preset
    python benchmarks/train_compare.py --datasets synthetic --synthetic-split 8,72 --seeds 0 1 2 --work runs/cmp
    python benchmarks/train_compare.py --quick    # a smoke run (few iterations)

Every method trains with the same seed, batch, crop and iteration count through `co2s.train.trainer.fit`, and is
scored at the last iteration (not the best one, so no method gets to pick its checkpoint on val). Writes
train_compare.csv, train_compare.md and train_compare.png into --out (default benchmarks/results/). The dubai part
is skipped with a message when the data folder is absent. Runs go to a temporary folder unless --work is given;
a finished run found there with the same configuration is reused, so an interrupted benchmark picks up where it
stopped. With several --seeds the tables show mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image, ImageDraw

from co2s.errors import Co2SInputError
from co2s.train.config import TrainConfig
from co2s.train.trainer import fit

HERE = Path(__file__).resolve().parent
METHODS = ("co2s", "supervised", "unimatch-clip", "unimatch-dinov3")
DEFAULT_LR = TrainConfig.lr


def dataset_setups(args) -> dict[str, dict]:
    """TrainConfig fields per dataset (on top of the shared ones), keyed by the name of their results table."""
    labeled, unlabeled = args.synthetic_split
    lr = "" if args.lr == DEFAULT_LR else f", lr {args.lr:g}"
    setups = {
        # default 24 labelled + 216 unlabelled scenes = 10 % labels; 128 px scenes, val 32 scenes
        f"synthetic {labeled}+{unlabeled}{lr}": dict(
            dataset="synthetic", num_labeled=labeled, num_unlabeled=unlabeled, num_val=32, image_size=128
        ),
        # split by tile (val = tiles 3 and 4, whole images), 256 px training patches, 1/8 labelled
        f"dubai{lr}": dict(dataset="dubai", data_root=args.dubai_root, split="1_8", image_size=256),
    }
    return {k: dict(v, lr=args.lr) for k, v in setups.items() if v["dataset"] in args.datasets}


def dubai_available(root: str | None) -> str | None:
    """None if the data is there, else why not."""
    from co2s.train.data import default_dubai_root

    try:
        path = Path(root) if root else default_dubai_root()
    except Co2SInputError as e:
        return str(e)
    return None if path.is_dir() and any(path.glob("Tile_*")) else f"{path}: no Tile_* folders"


def run_all(args) -> list[dict]:
    work = Path(args.work or tempfile.mkdtemp(prefix="co2s_train_compare_"))
    rows = []
    for name, setup in dataset_setups(args).items():
        if setup["dataset"] == "dubai" and (why := dubai_available(args.dubai_root)):
            print(f"skipping dubai: {why}")
            continue
        for method in args.methods:
            for seed in args.seeds:
                cfg = TrainConfig(
                    out=str(work / name / method / f"seed{seed}"),
                    preset="tiny",
                    method=method,
                    iters=args.iters,
                    batch_size=args.batch_size,
                    eval_every=args.iters,
                    seed=seed,
                    workers=args.workers,
                    **setup,
                )
                print(
                    f"== {name} / {method} / seed {seed}: {args.iters} iterations, batch {args.batch_size}", flush=True
                )
                last, seconds = finished_run(cfg) or train_and_score(cfg, progress=not args.no_progress)
                for prediction, miou in last.items():
                    rows.append(
                        {
                            "dataset": name,
                            "method": method,
                            "seed": seed,
                            "prediction": prediction,
                            "miou": round(miou, 2),
                            "iters": args.iters,
                            "batch_size": args.batch_size,
                            "seconds": round(seconds),
                        }
                    )
    return rows


def train_and_score(cfg: TrainConfig, progress: bool) -> tuple[dict[str, float], float]:
    t0 = time.time()
    result = fit(cfg, progress=progress, device="cpu")
    return result["last"], time.time() - t0


def finished_run(cfg: TrainConfig) -> tuple[dict[str, float], float] | None:
    """(last mIoUs, seconds) of a finished run of this exact configuration in cfg.out, else None."""
    out = Path(cfg.out)
    try:
        old = yaml.safe_load((out / "config.yaml").read_text())
        with (out / "metrics.csv").open() as f:
            last = list(csv.DictReader(f))[-1]
    except (OSError, IndexError, yaml.YAMLError):
        return None
    # fields left None are resolved from the preset when the run starts; config.yaml holds the resolved values
    same = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "workers") and v is not None}
    if any(old.get(k) != v for k, v in same.items()) or int(last["iteration"]) != cfg.iters:
        return None
    print(f"   reusing the finished run in {out}")
    return {k.removeprefix("miou_"): float(v) for k, v in last.items() if k.startswith("miou_")}, float(last["time_s"])


def merge_previous(rows: list[dict], path: Path) -> list[dict]:
    """Rows of (dataset, method) pairs not run this time are kept from an earlier CSV, so datasets and methods can
    be run separately; a pair that was run replaces all its earlier rows (every seed)."""
    if not path.exists():
        return rows
    ran = {(r["dataset"], r["method"]) for r in rows}
    with path.open() as f:
        old = [r for r in csv.DictReader(f) if (r["dataset"], r["method"]) not in ran]
    for r in old:
        r.update(
            miou=float(r["miou"]),
            iters=int(r["iters"]),
            batch_size=int(r["batch_size"]),
            seconds=int(r["seconds"]),
            seed=int(r.get("seed") or 0),
        )
    return old + rows


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["dataset", "method", "seed", "prediction", "miou", "iters", "batch_size", "seconds"]
        )
        w.writeheader()
        w.writerows(rows)


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = [
        "# Co2S vs baselines at equal iterations (tiny preset, CPU)",
        "",
        "Made by `python benchmarks/train_compare.py` (one part at a time with `--datasets` and",
        "`--methods`: the rows of what was run are replaced, the others kept; `--report-only` redraws this file).",
        "",
        "Val mIoU (%) at the last iteration: mean ± standard deviation over the seeds shown (one value: one seed).",
        "`fused` = mean of the students' softmaxes; a one-student method's `fused` is that student. A seed sets",
        "the initial weights, the data order and (synthetic) the generated scenes; the methods of one seed see",
        "the same scenes. The tiny students start from random weights (no pretraining) and train for a few",
        "hundred CPU iterations, so these numbers do not predict the paper preset.",
        "",
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == dataset]
        first = sub[0]
        lines += [
            f"## {dataset} ({first['iters']} iterations, batch {first['batch_size']})",
            "",
            "| method | seeds | fused | clip | dinov3 | train+eval time per run (s) |",
            "|---|---|---|---|---|---|",
        ]
        for method in dict.fromkeys(r["method"] for r in sub):
            mine = [r for r in sub if r["method"] == method]
            seeds = sorted({r["seed"] for r in mine})
            cells = [mean_std([r["miou"] for r in mine if r["prediction"] == p]) for p in ("fused", "clip", "dinov3")]
            secs = round(statistics.mean(r["seconds"] for r in mine))
            lines.append(f"| {method} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {secs} |")
        lines.append("")
    path.write_text("\n".join(lines))


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def write_chart(rows: list[dict], path: Path) -> None:
    """Grouped bars (fused / clip / dinov3) per method, one panel per dataset, drawn with PIL."""
    colours = {"fused": (60, 60, 60), "clip": (66, 133, 244), "dinov3": (234, 134, 20)}
    datasets = sorted({r["dataset"] for r in rows})
    panel_w, panel_h, top = 560, 300, 40
    img = Image.new("RGB", (panel_w * len(datasets), panel_h + top + 40), "white")
    draw = ImageDraw.Draw(img)
    ymax = max(r["miou"] for r in rows) * 1.15 or 1
    for d, dataset in enumerate(datasets):
        x0 = d * panel_w + 40
        draw.text((x0, 10), f"{dataset}: val mIoU (%)", fill="black")
        draw.line([(x0, top), (x0, top + panel_h)], fill="black")
        draw.line([(x0, top + panel_h), (x0 + panel_w - 60, top + panel_h)], fill="black")
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset))
        group_w = (panel_w - 80) / len(methods)
        for m, method in enumerate(methods):
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            got = {
                p: statistics.mean(r["miou"] for r in mine if r["prediction"] == p)
                for p in {r["prediction"] for r in mine}
            }
            for p, (pred, colour) in enumerate(colours.items()):
                if pred not in got:
                    continue
                bx = x0 + 10 + m * group_w + p * group_w / 4
                by = top + panel_h - got[pred] / ymax * panel_h
                draw.rectangle([bx, by, bx + group_w / 4 - 4, top + panel_h], fill=colour)
                draw.text((bx, by - 12), f"{got[pred]:.1f}", fill="black")
            draw.text((x0 + 10 + m * group_w, top + panel_h + 6), method, fill="black")
        for p, (pred, colour) in enumerate(colours.items()):
            draw.rectangle([x0 + 300 + p * 70, 10, x0 + 310 + p * 70, 20], fill=colour)
            draw.text((x0 + 314 + p * 70, 10), pred, fill="black")
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 iterations, batch 2, co2s and supervised only (unless --methods)",
    )
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--lr", type=float, default=DEFAULT_LR, help="base lr (head x10, tiny backbone x1)")
    ap.add_argument(
        "--synthetic-split",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=(24, 216),
        metavar="LABELED,UNLABELED",
        help="synthetic scenes with / without labels (default 24,216)",
    )
    ap.add_argument("--datasets", nargs="+", default=["synthetic", "dubai"], choices=["synthetic", "dubai"])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS) + ["homogeneous"], help=f"default: {METHODS}")
    ap.add_argument("--dubai-root", help="Dubai aerial folder (default: shared/data/dubai_aerial)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is the fastest on a busy 2-core machine: no spin-waiting)",
    )
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--work", help="where the runs go (default: a temporary folder)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="only redraw the .md/.png from the existing .csv")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.batch_size = 20, 2
    args.methods = args.methods or (["co2s", "supervised"] if args.quick else list(METHODS))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    stem = "train_compare_quick" if args.quick else "train_compare"
    rows = [] if args.report_only else run_all(args)
    if not rows and not args.report_only:
        sys.exit("nothing was run")
    out.mkdir(parents=True, exist_ok=True)
    rows = merge_previous(rows, out / f"{stem}.csv")
    if not rows:
        sys.exit(f"no results in {out / stem}.csv")
    write_csv(rows, out / f"{stem}.csv")
    write_markdown(rows, out / f"{stem}.md")
    write_chart(rows, out / f"{stem}.png")
    for r in rows:
        print(f"{r['dataset']:<10} {r['method']:<16} {r['prediction']:<7} {r['miou']:6.2f}")
    print(f"wrote {out / stem}.csv/.md/.png")


if __name__ == "__main__":
    main()
