"""Runtime matrix: backend x precision x batch of one bundle, against PyTorch eager of the same deploy module.

    python benchmarks/runtime_matrix.py --quick                      # tiny preset, 128^2, a short run (~1 min)
    python benchmarks/runtime_matrix.py --preset paper --tile 512    # the real model (slow on a small CPU)
    python benchmarks/runtime_matrix.py --bundle B                   # an existing bundle (eager needs --checkpoint
                                                                     # unless B was exported --untrained)

1. Exports one bundle with a dynamic batch (untrained weights unless --bundle is given: latency and FLOPs do not
   depend on the weights; label agreement of an untrained model is a weak signal, see the notes it writes).
2. Times every (backend, precision) the machine can run -- ort-cpu fp32/fp16/int8 always; ort-cuda and native
   TensorRT rows when a GPU and their packages exist -- and PyTorch eager (fp32, CPU) of the same DeployModel,
   for each batch size. Configurations are interleaved call by call, so load from other jobs on a shared machine
   hits all of them alike; ratios (speed-up vs eager, agreement vs ORT FP32) come from this one run.
3. Measures the machine's peak GEMM FLOP/s (numpy float32 2048^2 matmul, best of a few; torch on the GPU) and
   counts the model's FLOPs from the FP32 ONNX graph (MatMul/Gemm/Conv/ConvTranspose after shape inference),
   and reports attainment = achieved FLOP/s / peak.

Writes runtime_matrix.{csv,md,json,png} to --out-dir (default benchmarks/results/).
Threads: ORT, torch and numpy all use --threads (default $OMP_NUM_THREADS, else all cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (benchmarks/common.py, beside this script)


def _default_threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


def _pin_threads(n: int) -> None:
    """Before numpy is imported, so its BLAS uses the same thread count as ORT and torch."""
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, str(n))


# --- FLOPs and peak -------------------------------------------------------------------------------------------------


def onnx_flops(path: Path, batch: int = 1) -> dict:
    """Multiply-add FLOPs (2 per MAC) of MatMul/Gemm/Conv/ConvTranspose in an ONNX graph at a fixed batch.

    The dynamic batch dim is pinned, then onnx shape inference (with data propagation, for Reshape targets
    computed from Shape ops) gives every operand's shape. Elementwise ops, softmax and norms are not counted:
    they are memory-bound and < a few % of the FLOPs of a ViT.
    """
    import numpy as np
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(path), load_external_data=False)
    for vi in list(m.graph.input) + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim
        if d and not d[0].HasField("dim_value"):
            d[0].Clear()
            d[0].dim_value = batch
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [x.dim_value if x.HasField("dim_value") else None for x in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    total, unknown, by_op = 0, [], {}
    for n in m.graph.node:
        if n.op_type not in ("MatMul", "Gemm", "Conv", "ConvTranspose"):
            continue
        a, b = (shapes.get(x) for x in n.input[:2])
        o = shapes.get(n.output[0])
        if any(v is None or not v or None in v or 0 in v for v in (a, b, o)):
            unknown.append(n.name or n.op_type)
            continue
        out = int(np.prod(o))
        if n.op_type == "MatMul":
            f = 2 * out * a[-1]
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            f = 2 * out * (a[0] if trans_a else a[-1])
        elif n.op_type == "Conv":
            f = 2 * out * int(np.prod(b[1:]))  # weight [Cout, Cin/g, kh, kw]
        else:  # ConvTranspose: every input pixel scatters Cout/g * kh * kw MACs; weight [Cin, Cout/g, kh, kw]
            f = 2 * int(np.prod(a)) * int(np.prod(b[1:]))
        total += f
        by_op[n.op_type] = by_op.get(n.op_type, 0) + f
    return {"flops": total, "by_op": by_op, "unresolved_nodes": unknown, "batch": batch}


def cpu_peak_gemm(n: int = 2048, reps: int = 5) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up (BLAS thread pool, page faults)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return {"device": "cpu", "method": f"numpy float32 matmul {n}x{n}, best of {reps}", "flops_per_s": 2 * n**3 / best}


def gpu_peak_gemm(n: int = 8192, reps: int = 10) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    out = {"device": torch.cuda.get_device_name(0)}
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device="cuda", dtype=dt)
        b = torch.randn(n, n, device="cuda", dtype=dt)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out[f"{name}_flops_per_s"] = 2 * n**3 / best
        del a, b
    out["method"] = f"torch matmul {n}x{n} on the GPU (fp32 without TF32, fp16), best of {reps}"
    return out


# --- configurations ---------------------------------------------------------------------------------------------


def gpu_configs(bundle, notes: list[str]) -> list[tuple[str, str]]:
    from co2s.runtime.backends import available_providers
    from co2s.runtime.backends.gpu_probe import cuda_devices

    out = []
    provs = available_providers()
    gpu = cuda_devices()  # onnxruntime-gpu lists CUDAExecutionProvider on a machine without a GPU too
    if gpu and "CUDAExecutionProvider" in provs:
        out += [("ort-cuda", p) for p in bundle.precisions("onnx") if p != "int8"]
    elif not gpu:
        notes.append(f"no ort-cuda rows: no CUDA device ({gpu.detail})")
    else:
        notes.append(
            "no ort-cuda rows: onnxruntime has no CUDAExecutionProvider here "
            f"(providers: {', '.join(provs)}); install onnxruntime-gpu: pip install 'co2s[gpu]'"
        )
    engines = bundle.precisions("engine")
    if engines:
        out += [("tensorrt", p) for p in engines]
    else:
        notes.append(
            "no tensorrt rows: the bundle has no TensorRT engines (built only when TensorRT and an NVIDIA "
            "GPU are present: co2s-export --from-bundle B --engine fp16 --engine int8)"
        )
    return out


def try_engines(bundle_dir: Path, notes: list[str], log) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return
    try:
        from co2s.export.engines import add_engines

        add_engines(bundle_dir, ("fp16", "int8"), workspace_gib=4.0, log=log)
    except Exception as e:  # noqa: BLE001 - report, keep the ONNX rows
        notes.append(f"TensorRT engines could not be built: {e}")


def export(a, work: Path, notes: list[str]) -> Path:
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import export_bundle

    bmax = max(max(a.batches), 2)
    out = work / f"bundle_{a.preset}_{a.tile}"
    opts = ExportOptions(
        out=out,
        untrained=True,
        preset=a.preset,
        num_classes=a.num_classes,
        tile=a.tile,
        batch=(1, max(a.batches), bmax),
        calib_count=a.calib_count,
        force=True,
        log=lambda s: print(f"  [export] {s}", flush=True),
    )
    t = time.perf_counter()
    export_bundle(opts)
    notes.append(
        f"bundle exported here with UNTRAINED weights ({a.preset} preset, tile {a.tile}, {a.num_classes} "
        f"classes, dynamic batch 1:{max(a.batches)}:{bmax}) in {time.perf_counter() - t:.0f} s: latency and "
        "FLOPs are those of the real architecture; label agreement between precisions of an untrained "
        "model is decided by near-uniform class probabilities and says little about a trained one"
    )
    return out


# --- timing -------------------------------------------------------------------------------------------------------


def time_batch(runners: dict, tiles, agree, batch: int, iters: int, warmup: int) -> dict:
    """Interleaved timing of every runner at one batch size; labels on the agreement tiles."""
    import numpy as np

    from co2s.runtime.profiler import stage_stats

    batches = [tiles[(i * batch + np.arange(batch)) % len(tiles)] for i in range(max(1, min(iters, 8)))]
    for name, run in runners.items():
        n = max(warmup, 4) if name.startswith("pytorch") else warmup  # torch's first calls are much slower
        for i in range(n):
            run(batches[i % len(batches)])
    times = {k: [] for k in runners}
    for i in range(iters):
        for name, run in runners.items():
            t = time.perf_counter()
            run(batches[i % len(batches)])
            times[name].append(time.perf_counter() - t)
    labels = {
        name: np.concatenate([run(agree[j : j + batch])["labels"] for j in range(0, len(agree), batch)])
        for name, run in runners.items()
    }
    return {name: {"stats": stage_stats(ts), "labels": labels[name]} for name, ts in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny preset at its smallest tile, few iterations")
    ap.add_argument("--preset", choices=("tiny", "paper"), help="default: tiny with --quick, else paper")
    ap.add_argument("--tile", type=int, help="default: the preset's tile (tiny 128, paper 512)")
    ap.add_argument("--num-classes", type=int, default=6)
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    ap.add_argument("--iters", type=int, help="timed calls per configuration and batch (default 20; quick 6)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=_default_threads(),
        help="threads for ORT, torch and numpy (default $OMP_NUM_THREADS, else all cores)",
    )
    ap.add_argument("--bundle", help="time this bundle instead of exporting an untrained one")
    ap.add_argument("--checkpoint", help="checkpoint of a trained --bundle, for PyTorch eager")
    ap.add_argument("--calib-count", type=int, help="INT8 calibration tiles for the export (default 32; quick 8)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--work", help="scratch folder for the bundle (default: a temporary one)")
    a = ap.parse_args(argv)
    _pin_threads(a.threads)
    a.batches = sorted({int(b) for b in a.batches.split(",") if b.strip()})
    a.preset = a.preset or ("tiny" if a.quick else "paper")
    a.tile = a.tile or (128 if a.preset == "tiny" else 512)
    a.iters = a.iters or (6 if a.quick else 20)
    a.calib_count = a.calib_count or (8 if a.quick else 32)

    import numpy as np

    from co2s.runtime import load_bundle, open_backend
    from co2s.runtime.bench import synthetic_tiles
    from co2s.runtime.profiler import device_stamp, library_versions

    t_start = time.perf_counter()
    notes: list[str] = []
    loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    work = Path(a.work or tempfile.mkdtemp(prefix="co2s_runtime_matrix_"))
    work.mkdir(parents=True, exist_ok=True)
    if a.bundle:
        bundle_dir = Path(a.bundle)
    else:
        print(f"exporting an untrained {a.preset} bundle, tile {a.tile}...", flush=True)
        bundle_dir = export(a, work, notes)
        try_engines(bundle_dir, notes, lambda s: print(f"  [engines] {s}", flush=True))
    bundle = load_bundle(bundle_dir)
    m = bundle.data["model"]
    tile = bundle.tile
    bad = [b for b in a.batches if not bundle.batch.min <= b <= bundle.batch.max]
    if bad:
        raise SystemExit(f"--batches {bad}: the bundle takes {bundle.batch.min}..{bundle.batch.max} tiles per call")

    print("measuring peak GEMM FLOP/s...", flush=True)
    peak_cpu = cpu_peak_gemm(2048, 3 if a.quick else 5)
    peak_gpu = gpu_peak_gemm()
    fl = onnx_flops(bundle.artefact("onnx", "fp32").path, batch=1)
    flops_tile = fl["flops"]
    if fl["unresolved_nodes"]:
        notes.append(
            f"{len(fl['unresolved_nodes'])} MatMul/Conv nodes had unresolved shapes and are not counted: "
            "the FLOPs (and attainment) are a lower bound"
        )
    print(
        f"  CPU peak {peak_cpu['flops_per_s'] / 1e9:.1f} GFLOP/s; model {flops_tile / 1e9:.3f} GFLOP per tile",
        flush=True,
    )

    configs = [("ort-cpu", p) for p in ("fp32", "fp16", "int8") if p in bundle.precisions("onnx")]
    configs += gpu_configs(bundle, notes)
    backends, runners = {}, {}
    for be_name, prec in configs:
        try:
            be = open_backend(bundle, be_name, prec, threads=a.threads)
        except Exception as e:  # noqa: BLE001 - a row that cannot run is a note, not a crash
            notes.append(f"{be_name} {prec} skipped: {e}")
            continue
        backends[(be_name, prec)] = be
        runners[f"{be_name} {prec}"] = be.run

    from runtime_bench import eager_model

    eager, why = eager_model(bundle, a.checkpoint)
    if eager is not None:
        import torch

        torch.set_num_threads(a.threads)
        runners["pytorch-eager fp32"] = eager
        versions_torch = torch.__version__
    else:
        versions_torch = None
        notes.append(f"PyTorch eager baseline skipped: {why}; speedup_vs_torch_fp32 is empty")

    tiles = synthetic_tiles(max(8, 2 * max(a.batches)), tile)
    agree = tiles[:8]
    rows = []
    for b in a.batches:
        print(f"batch {b}: {len(runners)} configurations x {a.iters} interleaved calls...", flush=True)
        res = time_batch(runners, tiles, agree, b, a.iters, a.warmup)
        ref = res.get("ort-cpu fp32", {}).get("labels")
        base = res.get("pytorch-eager fp32", {}).get("stats", {}).get("p50_ms")
        for name, r in res.items():
            be_name, prec = name.split(" ")
            st = r["stats"]
            gflops = flops_tile * b / (st["p50_ms"] / 1e3) / 1e9
            on_gpu = be_name in ("ort-cuda", "ort-trt", "tensorrt")
            if on_gpu and peak_gpu:
                peak = peak_gpu["fp32_flops_per_s"] if prec == "fp32" else peak_gpu["fp16_flops_per_s"]
            else:
                peak = None if on_gpu else peak_cpu["flops_per_s"]
            rows.append(
                {
                    "backend": be_name,
                    "precision": prec,
                    "batch": b,
                    "tile": tile,
                    "p50_ms": round(st["p50_ms"], 3),
                    "p99_ms": round(st["p99_ms"], 3),
                    "mean_ms": round(st["mean_ms"], 3),
                    "tiles_per_s": round(b / (st["p50_ms"] / 1e3), 2),
                    "speedup_vs_torch_fp32": None if base is None else round(base / st["p50_ms"], 3),
                    "agreement_vs_fp32": None if ref is None else round(float(np.mean(r["labels"] == ref)), 5),
                    "gflops": round(gflops, 2),
                    "attainment": None if peak is None else round(gflops * 1e9 / peak, 4),
                    "iters": a.iters,
                }
            )
            print(
                f"  {name:<20} p50 {st['p50_ms']:8.2f} ms  p99 {st['p99_ms']:8.2f} ms  {gflops:7.2f} GFLOP/s",
                flush=True,
            )
    for be in backends.values():
        be.close()

    result = {
        "bundle": str(bundle.root),
        "preset": m["preset"],
        "tile": tile,
        "num_classes": m["num_classes"],
        "untrained": bool(m.get("untrained")),
        "batch_range": [bundle.batch.min, bundle.batch.max],
        "device": device_stamp(use_gpu=bool(peak_gpu)),
        "versions": {**library_versions(), **({"torch": versions_torch} if versions_torch else {})},
        "threads": a.threads,
        "loadavg_at_start": loadavg,
        "iters": a.iters,
        "warmup": a.warmup,
        "quick": a.quick,
        "peak_cpu": peak_cpu,
        "peak_gpu": peak_gpu,
        "model_flops": fl,
        "rows": rows,
        "notes": notes,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if peak_gpu is None:
        notes.append(
            "no GPU on this machine: CPU rows only; on a GPU machine the same command adds ort-cuda and "
            "tensorrt rows and measures the GPU's peak GEMM"
        )
    out = Path(a.out_dir)
    write_outputs(out, result)
    if not a.work:  # a scratch folder of ours: the bundles in it go
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(result))
    print(f"wrote {out}/runtime_matrix.{{csv,md,json,png}} in {result['seconds']:.0f} s")
    return 0


# --- reporting ----------------------------------------------------------------------------------------------------

COLUMNS = [
    "backend",
    "precision",
    "batch",
    "tile",
    "p50_ms",
    "p99_ms",
    "speedup_vs_torch_fp32",
    "agreement_vs_fp32",
    "gflops",
    "attainment",
    "mean_ms",
    "tiles_per_s",
    "iters",
]


def write_outputs(out: Path, r: dict) -> None:
    common.write_outputs(out, "runtime_matrix", r, COLUMNS, markdown, chart)


def _x(v, fmt="{:.1f}"):
    return "—" if v is None else fmt.format(v)


def markdown(r: dict) -> str:
    d = r["device"]
    pc = r["peak_cpu"]
    fl = r["model_flops"]
    lines = [
        "# co2s runtime matrix",
        "",
        f"- bundle: {r['preset']} preset, tile {r['tile']}, {r['num_classes']} classes, batch "
        f"{r['batch_range'][0]}..{r['batch_range'][1]}; **untrained weights: {r['untrained']}**",
        f"- machine: {d.get('cpu')} ({d.get('cpu_cores')} cores)"
        + (f", GPU {d['gpu']}" if d.get("gpu") else "")
        + f"; {r['threads']} thread(s) for ORT/torch/numpy; load average at start {r['loadavg_at_start']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        f"- {r['iters']} timed calls per configuration and batch, interleaved call by call; {r['warmup']} warm-up "
        "calls excluded (PyTorch: at least 4); synthetic tiles; latency = one call on a whole batch",
        f"- model: {fl['flops'] / 1e9:.3f} GFLOP per tile (MatMul/Gemm/Conv/ConvTranspose of the FP32 ONNX graph "
        "after shape inference, 2 FLOP per multiply-add; "
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in sorted(fl["by_op"].items()))
        + ")",
        f"- peak GEMM, CPU: {pc['flops_per_s'] / 1e9:.1f} GFLOP/s ({pc['method']})",
    ]
    if r.get("peak_gpu"):
        g = r["peak_gpu"]
        lines.append(
            f"- peak GEMM, GPU {g['device']}: fp32 {g['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s, fp16 "
            f"{g['fp16_flops_per_s'] / 1e12:.1f} TFLOP/s ({g['method']}; INT8 rows are compared with fp16)"
        )
    lines += [
        "- speed-up = PyTorch eager FP32 p50 / this p50 at the same batch; agreement = share of pixels whose label "
        "equals ORT CPU FP32's at the same batch (8 tiles); attainment = achieved GFLOP/s (from p50) / peak GEMM",
        "",
        "| backend | precision | batch | tile | p50 ms | p99 ms | tiles/s | speed-up vs torch fp32 | "
        "agreement vs fp32 | GFLOP/s | attainment |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['backend']} | {x['precision']} | {x['batch']} | {x['tile']} | {x['p50_ms']:.2f} | "
            f"{x['p99_ms']:.2f} | {x['tiles_per_s']:.1f} | {_x(x['speedup_vs_torch_fp32'], '{:.2f}x')} | "
            f"{_x(None if x['agreement_vs_fp32'] is None else 100 * x['agreement_vs_fp32'], '{:.2f} %')} | "
            f"{x['gflops']:.2f} | {_x(None if x['attainment'] is None else 100 * x['attainment'], '{:.1f} %')} |"
        )
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    lines += ["", f"Run time {r['seconds']:.0f} s" + (" (--quick)" if r["quick"] else "") + "."]
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    """Grouped bars: p50 per tile (ms) per configuration, one group per batch size; p99 as a tick."""
    rows = r["rows"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(f"{x['backend']} {x['precision']}" for x in rows))
    batches = sorted({x["batch"] for x in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(configs) * len(batches) / 2 + 3), 4.2))
    w = 0.8 / len(batches)
    for j, b in enumerate(batches):
        ys, y99, xs = [], [], []
        for i, c in enumerate(configs):
            x = next((x for x in rows if f"{x['backend']} {x['precision']}" == c and x["batch"] == b), None)
            if x is None:
                continue
            xs.append(i + (j - (len(batches) - 1) / 2) * w)
            ys.append(x["p50_ms"] / b)
            y99.append(x["p99_ms"] / b)
        bars = ax.bar(xs, ys, w * 0.95, label=f"batch {b}")
        ax.errorbar(
            xs,
            ys,
            yerr=[[0] * len(ys), [max(0, q - p) for p, q in zip(ys, y99)]],
            fmt="none",
            ecolor="black",
            capsize=3,
            lw=1,
        )
        for bar, y in zip(bars, ys):
            ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(configs)), configs, rotation=20, ha="right")
    ax.set_ylabel("ms per tile (p50 call / batch; whisker: p99)")
    d = r["device"]
    ax.set_title(
        f"co2s {r['preset']} {r['tile']}^2{' (untrained)' if r['untrained'] else ''} - {d.get('cpu', '')}"
        f"{', ' + d['gpu'] if d.get('gpu') else ''}, {r['threads']} thread(s)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
