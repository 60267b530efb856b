"""The PyTorch-level GPU check (issue 14): what a lent CUDA machine with only PyTorch can tell us.

    python benchmarks/gpu_check.py OUT [--preset paper] [--tile 512] [--iters 8]

1. Co2S training iterations of the preset with AMP (bf16) on CUDA, semi-supervised, synthetic scenes: it/s (the
   steady rate between two runs of different length, so start-up and data generation cancel) and peak memory.
2. The fused deploy graph (co2s.export.deploy.DeployModel) under FP16 autocast on CUDA at the tile, batch 1 and 8:
   latency p50/p99 and label agreement with the FP32 graph on the same inputs.
3. For reference, the same graph exported to ONNX (FP32) and run by onnxruntime on that machine's CPU, batch 1.

Prints one Markdown table and writes it with the raw numbers to OUT/gpu_check.{md,json}. Without CUDA it says so
and exits 2 (nothing measured). `--preset tiny` makes a quick smoke run of the same code anywhere with CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _train_rate(preset: str, tile: int, iters: int, work: Path) -> dict:
    import torch

    from co2s.train.config import TrainConfig
    from co2s.train.trainer import fit

    def run(n: int, name: str) -> float:
        cfg = TrainConfig(
            dataset="synthetic",
            out=str(work / name),
            preset=preset,
            iters=n,
            eval_every=10_000,  # no evaluation inside the timed span
            crop=tile,
            image_size=tile,
            num_labeled=4,
            num_unlabeled=8,
            num_val=1,
            batch_size=2,
            amp="bf16",
            workers=2,
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fit(cfg, device="cuda", progress=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    torch.cuda.reset_peak_memory_stats()
    short = run(2, "short")
    long = run(2 + iters, "long")
    return {
        "iters_per_s": iters / max(long - short, 1e-9),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "wall_short_s": short,
        "wall_long_s": long,
    }


def _latency(model, x, reps: int) -> list[float]:
    import torch

    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _deploy(preset: str, tile: int) -> tuple[dict, object]:
    import torch

    from co2s.export.deploy import DeployConfig, DeployModel
    from co2s.train.backbones import build_backbone
    from co2s.train.model import STUDENT_KINDS, build_co2s, get_preset

    torch.manual_seed(0)  # random weights and class vectors, as `co2s-export --untrained` makes them
    text_dim = build_backbone(get_preset(preset).backbones["clip"], img_size=tile).text_dim
    protos = np.random.default_rng(0).standard_normal((6, text_dim)).astype(np.float32)
    model = build_co2s(
        6, preset=preset, prototypes=protos / np.linalg.norm(protos, axis=1, keepdims=True), img_size=tile
    )
    deploy = DeployModel(model, DeployConfig(students=STUDENT_KINDS, tile=tile)).cuda().eval()
    rows = {}
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.from_numpy(rng.integers(0, 256, (batch, tile, tile, 3), dtype=np.uint8)).cuda()
            labels32 = deploy(x)[0]
            with torch.autocast("cuda", dtype=torch.float16):
                _latency(deploy, x, 5)  # warm-up
                times = np.array(_latency(deploy, x, 30))
                labels16 = deploy(x)[0]
            rows[batch] = {
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
                "agreement_vs_fp32": float((labels16 == labels32).float().mean()),
            }
    return rows, deploy.cpu()


def _ort_reference(deploy, tile: int, work: Path) -> dict:
    import onnxruntime as ort
    import torch

    path = work / "deploy.onnx"
    x = torch.zeros((1, tile, tile, 3), dtype=torch.uint8)
    torch.onnx.export(deploy, (x,), str(path), dynamo=True, input_names=["images"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).integers(0, 256, (1, tile, tile, 3), dtype=np.uint8)}
    sess.run(None, feed)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.median(times)), "threads": ort.SessionOptions().intra_op_num_threads or "default"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--iters", type=int, default=8)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to PyTorch; nothing measured", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = _train_rate(args.preset, args.tile, args.iters, work)
        deploy_rows, deploy = _deploy(args.preset, args.tile)
        ort_row = _ort_reference(deploy, args.tile, work)
    lines = [
        f"GPU check on {gpu}, torch {torch.__version__}, preset {args.preset}, tile {args.tile}",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| training, bf16 AMP, batch 2+2, it/s | {train['iters_per_s']:.2f} |",
        f"| training peak memory, GiB | {train['peak_gib']:.2f} |",
    ]
    for b, r in deploy_rows.items():
        lines.append(
            f"| fused graph FP16 autocast, batch {b}: p50 / p99 ms, agreement vs FP32 | "
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}, {100 * r['agreement_vs_fp32']:.3f} % |"
        )
    lines.append(f"| ONNX FP32 on onnxruntime CPU, batch 1, p50 ms | {ort_row['p50_ms']:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (args.out / "gpu_check.md").write_text(table)
    record = {"gpu": gpu, "torch": torch.__version__, "preset": args.preset, "tile": args.tile}
    record.update(train=train, deploy_fp16=deploy_rows, ort_cpu_fp32=ort_row)
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
