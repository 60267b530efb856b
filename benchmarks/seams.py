"""Tile seams: how much more often the label changes on the tile cut lines than elsewhere, per stitching mode.

A seam is a label change between two neighbouring pixels that come from different tiles under the most-central
rule (the cut lines are the same for every mode: the boundaries of the tiles' kept boxes). The ratio

    (changes across cut lines / pixel pairs across cut lines) / (changes elsewhere / pairs elsewhere)

is 1 for a seamless map. Modes: `central` (each pixel from the tile where it is most central), `vote` (blend
vote_probs, what a bundle without probs gets by default), `probs` (blend the bundle's probabilities). Run on a
synthetic scene with the trained tiny model of the tests (tests/_export_helpers.py), and on the Dubai scenes in
the shared Dubai set (co2s.train.data.default_dubai_root) when present. Also times each mode (stitching cost, same backend calls).

    python benchmarks/seams.py [--size 1024] [--out benchmarks/results/seams]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cut_positions(starts: list[int], tile: int, length: int) -> list[int]:
    from co2s.runtime.tiling import axis_keep_bounds

    return [lo for lo, _ in axis_keep_bounds(starts, tile, length)[1:]]


def seam_ratio(labels: np.ndarray, grid) -> dict:
    """Label changes across the cut lines vs elsewhere (horizontal and vertical neighbour pairs together)."""
    xs = set(cut_positions(list(grid.xs), grid.tile, grid.width))
    ys = set(cut_positions(list(grid.ys), grid.tile, grid.height))
    dx = labels[:, 1:] != labels[:, :-1]  # pair (x-1, x) at index x-1
    dy = labels[1:, :] != labels[:-1, :]
    on_x = np.zeros(dx.shape[1], bool)
    on_x[[x - 1 for x in xs]] = True
    on_y = np.zeros(dy.shape[0], bool)
    on_y[[y - 1 for y in ys]] = True
    cut_changes = dx[:, on_x].sum() + dy[on_y].sum()
    cut_pairs = dx[:, on_x].size + dy[on_y].size
    other_changes = dx[:, ~on_x].sum() + dy[~on_y].sum()
    other_pairs = dx[:, ~on_x].size + dy[~on_y].size
    rate_cut, rate_other = cut_changes / max(1, cut_pairs), other_changes / max(1, other_pairs)
    return {
        "ratio": float(rate_cut / rate_other) if rate_other else float("inf"),
        "rate_cut": float(rate_cut),
        "rate_other": float(rate_other),
    }


MODES = {"central": dict(blend=False), "vote": dict(blend=True, use_probs=False), "probs": dict(blend=True)}


def run_modes(backend, image: np.ndarray, num_classes: int, *, overlap=None) -> dict:
    """Seam ratio and seconds of each stitching mode on one image (same tiles, same backend)."""
    from co2s.runtime.pipeline import predict_array
    from co2s.runtime.tiling import TileGrid

    T = backend.tile
    grid = TileGrid(*image.shape[:2], T, round(T / 6) if overlap is None else overlap)
    out = {}
    for mode, kw in MODES.items():
        t = time.perf_counter()
        labels = predict_array(backend, image, num_classes=num_classes, overlap=overlap, **kw)["labels"]
        out[mode] = {**seam_ratio(labels, grid), "seconds": time.perf_counter() - t}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="synthetic scene side (pixels)")
    ap.add_argument("--scenes", type=int, default=2, help="synthetic scenes")
    ap.add_argument("--dubai", type=int, default=2, help="Dubai images to measure when present")
    ap.add_argument("--bundle", help="bundle to use (kept between runs); default: export the tests' tiny model")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seams"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from _export_helpers import NUM_CLASSES, trained_tiny_checkpoint, workdir

    from co2s.bundle import load_bundle
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import export_bundle
    from co2s.runtime.backends import open_backend
    from co2s.train.data import make_scene

    bdir = Path(args.bundle) if args.bundle else workdir() / "seams-bundle"
    if not (bdir / "co2s.json").exists():  # the tests' trained tiny pair, exported fp32 with probs
        export_bundle(
            ExportOptions(
                out=bdir, checkpoint=trained_tiny_checkpoint(), precisions=("fp32",), probs=True, log=lambda *_: None
            )
        )
    bundle = load_bundle(bdir)
    be = open_backend(bundle, "ort-cpu", "fp32")
    rows = []
    for s in range(args.scenes):
        img, _ = make_scene(20_000 + s, args.size)
        for mode, r in run_modes(be, img, NUM_CLASSES).items():
            rows.append({"scene": f"synthetic-{20_000 + s}-{args.size}", "mode": mode, **r})
            print(rows[-1], flush=True)
    from co2s.train.data import default_dubai_root

    dubai = default_dubai_root()
    if dubai.exists():
        from PIL import Image

        images = sorted(p for p in dubai.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".tif"))[: args.dubai]
        for p in images:  # the synthetic-trained model on real imagery: seams, not accuracy
            img = np.asarray(Image.open(p).convert("RGB"))
            for mode, r in run_modes(be, img, NUM_CLASSES).items():
                rows.append({"scene": f"dubai:{p.name}", "mode": mode, **r})
                print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| scene | mode | cut/elsewhere ratio | change rate on cuts | elsewhere | seconds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['scene']} | {r['mode']} | {r['ratio']:.2f} | {r['rate_cut']:.4f} | {r['rate_other']:.4f} | "
        f"{r['seconds']:.2f} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
