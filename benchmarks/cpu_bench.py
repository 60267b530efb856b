"""Issue 13's CPU numbers in one run on this machine: export cost, cold start, and latency of every CPU path.

    python benchmarks/cpu_bench.py                       # paper preset, untrained, 256^2 and 512^2, batch 1 and 4
    python benchmarks/cpu_bench.py --batches 1                   # static batch-1 bundles: what a default export is
    python benchmarks/cpu_bench.py --bundle B256 --bundle B512   # bundles exported before
    python benchmarks/cpu_bench.py --quick               # tiny preset, 64^2 (smoke test)

1. Export: each bundle is exported here (unless --bundle) in a subprocess, `co2s-export --untrained --preset P
   --tile T` with every default precision, `--batch B` for one batch size (static: what a default export
   deploys), `--dynamic-batch MIN:MAX:MAX` for several; wall time and the child's peak RSS
   (os.wait4), and per step the exporter's own -v lines (wall, peak RSS so far).
2. Cold start: a fresh process per precision runs `co2s-infer`'s path (load the bundle, open the ort-cpu backend,
   run one tile): seconds to the first result, with an empty cache and again with the cache that first run left
   (onnxruntime's optimised graph, when the runtime keeps one).
3. Latency, batch 1 and 4, interleaved call by call (background load hits every configuration alike): ORT FP32,
   ORT INT8 (TensorRT-shaped Q/DQ), ORT INT8 (CPU), PyTorch eager and torch.compile (inductor) on the same deploy
   graph, OpenVINO on the same FP32 ONNX (a peer; benchmark-only, skipped with the reason when not installed).
   Achieved GFLOP/s = the model's FLOPs (torch's FlopCounterMode on the deploy graph) x batch / p50, against the
   measured peak of onnxruntime's own FP32 GEMM (and U8S8 MatMulInteger) on this CPU, not numpy's BLAS.
4. An onnxruntime per-op profile of the INT8 (CPU) graph at batch 1: where the time goes (top op types).

Writes cpu_bench.{json,csv,md,png} to --out-dir. Agreement and mIoU deltas on a trained model: accuracy.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
COLUMNS = ("tile", "batch", "config", "p50_ms", "p90_ms", "vs_ort_fp32", "gflops", "of_peak", "note")
TARGETS = {"int8_cpu_vs_fp32": 1.8, "ort_fp32_vs_eager": 1.3, "ort_fp32_vs_best_peer": 0.95}


# ----------------------------------------------------------------------------------------------- 1. export
def export_args(batches: list[int]) -> list[str]:
    lo, hi = min(batches), max(batches)
    return ["--batch", str(lo)] if lo == hi else ["--dynamic-batch", f"{lo}:{hi}:{hi}"]


def export_bundle(out: Path, preset: str, tile: int, classes: int, batches: list[int]) -> dict:
    cmd = [sys.executable, "-m", "co2s.export.cli", "-v", "--untrained", "--preset", preset, "--tile", str(tile)]
    cmd += ["--num-classes", str(classes), *export_args(batches), "--out", str(out), "--force"]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    log_text = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (RUSAGE_CHILDREN keeps the largest)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.stderr.write(log_text)
        raise SystemExit(f"export failed: {' '.join(cmd)}")
    # the exporter's own -v lines: "step 'NAME': S s, RSS A GB, peak so far B GB"
    steps = [
        {"step": m[1] or m[2], "seconds": float(m[3]), "peak_so_far_gb": float(m[5])}
        for m in re.finditer(
            r"step (?:'([^']+)'|\"([^\"]+)\"): ([\d.]+) s, RSS ([\d.]+) GB, peak so far ([\d.]+) GB", log_text
        )
    ]
    return {"tile": tile, "seconds": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "steps": steps}


# ------------------------------------------------------------------------------------------- 2. cold start
_COLD = """
import time, sys; t0 = time.perf_counter()
import numpy as np
from co2s.bundle import load_bundle
from co2s.runtime.backends import open_backend
b = load_bundle(sys.argv[1], verify=True); t1 = time.perf_counter()
be = open_backend(b, "ort-cpu", sys.argv[2], threads=int(sys.argv[3])); t2 = time.perf_counter()
be.run(np.zeros((b.batch.min, b.tile, b.tile, 3), np.uint8)); t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {t3 - t0:.3f}")
"""


def cold_start(bundle: Path, precision: str, threads: int, cache: Path) -> dict:
    env = {**os.environ, "CO2S_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(threads)}
    out = {}
    for run in ("empty cache", "warm cache"):
        r = subprocess.run(
            [sys.executable, "-c", _COLD, str(bundle), precision, str(threads)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        load, session, first, total = map(float, r.stdout.split()[-4:])
        out[run] = {"load_verify_s": load, "session_s": session, "first_call_s": first, "total_s": total}
    return out


# ---------------------------------------------------------------------------------------------- 3. latency
def gemm_peaks(threads: int, n: int = 1024) -> dict:
    """GFLOP/s of onnxruntime's own FP32 MatMul and GOP/s of its U8S8 MatMulInteger, n x n x n, this CPU."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def timed(model, feeds) -> float:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            s.run(None, feeds)
        ts = []
        for _ in range(10):
            t = time.perf_counter()
            s.run(None, feeds)
            ts.append(time.perf_counter() - t)
        return 2 * n**3 / float(np.median(ts)) / 1e9

    def graph(op, ta, tb, to):
        g = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])],
            "gemm",
            [helper.make_tensor_value_info("a", ta, [n, n]), helper.make_tensor_value_info("b", tb, [n, n])],
            [helper.make_tensor_value_info("y", to, [n, n])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    fp32 = timed(graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT), {"a": a, "b": b})
    au = rng.integers(0, 255, (n, n), dtype=np.uint8)
    bs = rng.integers(-127, 127, (n, n), dtype=np.int8)
    u8s8 = timed(graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32), {"a": au, "b": bs})
    return {"fp32_gflops": round(fp32, 1), "u8s8_gops": round(u8s8, 1), "n": n}


def model_gflop(deploy, tile: int) -> dict:
    """GFLOP of one tile through the deploy graph, as torch counts them: in all (matmuls, convolutions,
    attention) and in the linear layers alone (aten.addmm: what int8-cpu's dynamic form quantises)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        deploy(torch.zeros((1, tile, tile, 3), dtype=torch.uint8))
    per_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": counter.get_total_flops() / 1e9, "linear": per_op.get("aten.addmm", 0) / 1e9}


def torch_runners(bundle, threads: int) -> tuple[dict, float | None, dict]:
    """PyTorch eager and torch.compile (inductor) of the bundle's deploy graph, its GFLOP per tile, notes."""
    notes = {}
    try:
        import torch
    except ImportError:
        return {}, None, {"pytorch": "torch is not installed"}
    from runtime_bench import eager_model

    run, why = eager_model(bundle, None)
    if run is None:
        return {}, None, {"pytorch": why}
    torch.set_num_threads(threads)
    deploy = run.module
    runners = {"pytorch eager": run}
    gflop = model_gflop(deploy, bundle.tile)
    try:
        compiled = torch.compile(deploy, backend="inductor", dynamic=False)

        def run_compiled(x):
            with torch.inference_mode():
                out = compiled(torch.from_numpy(x))
            return {"labels": out[0].numpy()}

        runners["torch.compile inductor"] = run_compiled
    except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
        notes["torch.compile inductor"] = f"{type(e).__name__}: {e}"
    return runners, gflop, notes


def openvino_runner(bundle, threads: int):
    try:
        import openvino as ov
    except ImportError:
        return None, "OpenVINO is not installed (pip install openvino; benchmark-only)"
    core = ov.Core()
    path = bundle.artefact("onnx", "fp32").path
    compiled = {}

    def run(x):
        b = x.shape[0]
        if b not in compiled:  # one compiled model per batch size, like a static-shape deployment
            model = core.read_model(str(path))
            model.reshape({model.inputs[0].get_any_name(): [b, bundle.tile, bundle.tile, 3]})
            compiled[b] = core.compile_model(
                model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
            )
        out = compiled[b]([x])
        return {"labels": next(v for k, v in out.items() if k.get_any_name() == "labels")}

    return run, None


def latency(bundle, batches: list[int], threads: int, iters: int, log) -> tuple[list[dict], dict]:
    from co2s.runtime.backends import open_backend

    runners, flops, notes = {}, None, {}
    for p, name in (("fp32", "ort fp32"), ("int8", "ort int8 (TensorRT-shaped)"), ("int8-cpu", "ort int8-cpu")):
        if p in bundle.precisions("onnx"):
            runners[name] = open_backend(bundle, "ort-cpu", p, threads=threads).run
        else:
            notes[name] = f"the bundle has no {p} ONNX"
    t_runners, flops, t_notes = torch_runners(bundle, threads)
    gflop = None if flops is None else flops["total"]
    runners.update(t_runners)
    notes.update(t_notes)
    ov_run, why = openvino_runner(bundle, threads)
    if ov_run is not None:
        runners["openvino fp32"] = ov_run
    else:
        notes["openvino fp32"] = why
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        x = rng.integers(0, 255, (b, bundle.tile, bundle.tile, 3), dtype=np.uint8)
        for name, run in runners.items():  # warm-up: torch.compile compiles here, OpenVINO per batch size
            t = time.perf_counter()
            for _ in range(3):
                run(x)
            log(f"  tile {bundle.tile} batch {b}: warm-up {name} {(time.perf_counter() - t) / 3:.2f} s/call")
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(iters):
            for name, run in runners.items():
                t = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t)
        base = float(np.median(times["ort fp32"]))
        for name, ts in times.items():
            p50 = float(np.median(ts))
            gf = None if gflop is None else gflop * b / p50
            rows.append(
                {
                    "tile": bundle.tile,
                    "batch": b,
                    "config": name,
                    "p50_ms": round(1e3 * p50, 1),
                    "p90_ms": round(1e3 * float(np.percentile(ts, 90)), 1),
                    "vs_ort_fp32": round(base / p50, 3),
                    "gflops": None if gf is None else round(gf, 1),
                    "note": "",
                }
            )
            log(f"  tile {bundle.tile} batch {b}: {name} p50 {1e3 * p50:.0f} ms ({base / p50:.2f}x ort fp32)")
        for name, why in notes.items():
            rows.append({"tile": bundle.tile, "batch": b, "config": name, "note": f"skipped: {why}"})
    return rows, {"gflop_per_tile": gflop, "linear_gflop_per_tile": None if flops is None else flops["linear"]}


# --------------------------------------------------------------------------------------------- 4. profile
def op_profile(bundle, threads: int, runs: int = 5) -> list[dict]:
    """onnxruntime's own per-node profile of the int8-cpu graph (batch 1), summed per op type."""
    import onnxruntime as ort

    if "int8-cpu" not in bundle.precisions("onnx"):
        return []
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    s = ort.InferenceSession(str(bundle.artefact("onnx", "int8-cpu").path), so, providers=["CPUExecutionProvider"])
    x = np.zeros((bundle.batch.min, bundle.tile, bundle.tile, 3), np.uint8)
    for _ in range(runs + 1):
        s.run(None, {s.get_inputs()[0].name: x})
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3
    total = sum(per_op.values()) or 1.0
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    return [{"op": k, "ms_per_run": round(v / (runs + 1), 1), "share": round(v / total, 3)} for k, v in top]


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", type=Path, help="an exported bundle (repeatable); default: export")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--tiles", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="tiny preset, 64^2, few calls (smoke test)")
    ap.add_argument("--work", type=Path, help="where exported bundles go (default: a temporary folder)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    if a.quick:
        a.preset, a.tiles, a.iters = "tiny", [64], 3
    from co2s.bundle import load_bundle
    from co2s.runtime.profiler import cpu_model, library_versions

    log = lambda m: print(m, flush=True)  # noqa: E731
    work = a.work or Path(tempfile.mkdtemp(prefix="co2s-cpu-bench-"))
    exports = []
    paths = a.bundle or []
    if not paths:
        for t in a.tiles:
            log(f"exporting the {a.preset} pair at {t}^2 ...")
            exports.append(export_bundle(work / f"{a.preset}{t}", a.preset, t, 6, a.batches))
            log(f"  {exports[-1]['seconds']:.0f} s, peak RSS {exports[-1]['peak_rss_gb']} GB")
            paths.append(work / f"{a.preset}{t}")
    peaks = gemm_peaks(a.threads)
    log(f"onnxruntime GEMM peak: FP32 {peaks['fp32_gflops']} GFLOP/s, U8S8 {peaks['u8s8_gops']} GOP/s")
    rows, cold, profiles, gflops, linear = [], {}, {}, {}, {}
    for path in paths:
        bundle = load_bundle(path, verify=True)
        batches = [b for b in a.batches if bundle.batch.min <= b <= bundle.batch.max]
        for p in ("fp32", "int8-cpu"):
            if p in bundle.precisions("onnx"):
                cold[f"{bundle.tile} {p}"] = cold_start(path, p, a.threads, work / f"cache{bundle.tile}")
                log(f"  cold start {bundle.tile} {p}: {cold[f'{bundle.tile} {p}']}")
        r, info = latency(bundle, batches, a.threads, a.iters, log)
        gflops[bundle.tile] = info["gflop_per_tile"]
        linear[bundle.tile] = info["linear_gflop_per_tile"]
        for row in r:
            if row.get("gflops") is not None:
                peak = peaks["u8s8_gops"] if "int8" in row["config"] else peaks["fp32_gflops"]
                row["of_peak"] = round(row["gflops"] / peak, 3)
        rows += r
        profiles[bundle.tile] = op_profile(bundle, a.threads)
    result = {
        "rows": rows,
        "exports": exports,
        "export_args": export_args(a.batches),
        "cold_start": cold,
        "gemm_peaks": peaks,
        "gflop_per_tile": gflops,
        "linear_gflop_per_tile": linear,
        "int8_cpu_profile": profiles,
        "preset": a.preset,
        "threads": a.threads,
        "targets": TARGETS,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "versions": library_versions(),
    }
    from common import write_outputs

    write_outputs(a.out_dir, "cpu_bench", result, COLUMNS, _markdown, _chart)
    log(f"wrote {a.out_dir}/cpu_bench.{{json,csv,md,png}}")
    return 0


def _markdown(r: dict) -> str:
    L = [
        "# CPU paths in one run (issue 13)",
        "",
        f"{r['machine']}; {r['threads']} threads; preset {r['preset']} (untrained weights: latency does not depend "
        f"on them). onnxruntime GEMM peak on this CPU: FP32 {r['gemm_peaks']['fp32_gflops']} GFLOP/s, U8S8 "
        f"MatMulInteger {r['gemm_peaks']['u8s8_gops']} GOP/s ({r['gemm_peaks']['n']}³). Model: "
        + ", ".join(f"{v:.1f} GFLOP per {t}² tile" for t, v in r["gflop_per_tile"].items() if v)
        + ".",
        "",
        "| tile | batch | configuration | p50 ms | p90 ms | vs ORT FP32 | GFLOP/s | of peak | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        if x.get("p50_ms") is None:
            L.append(f"| {x['tile']} | {x['batch']} | {x['config']} | – | – | – | – | – | {x['note']} |")
            continue
        g = "–" if x.get("gflops") is None else f"{x['gflops']:.0f}"
        pk = "–" if x.get("of_peak") is None else f"{100 * x['of_peak']:.0f} %"
        L.append(
            f"| {x['tile']} | {x['batch']} | {x['config']} | {x['p50_ms']:.0f} | {x['p90_ms']:.0f} | "
            f"{x['vs_ort_fp32']:.2f}× | {g} | {pk} | {x['note']} |"
        )
    if r["exports"]:
        args = " ".join(r.get("export_args", []))
        L += ["", f"**Export** (`co2s-export --untrained {args}`, every default precision):", ""]
        L += ["| tile | wall | peak RSS |", "|---|---|---|"]
        L += [f"| {e['tile']} | {e['seconds'] / 60:.1f} min | {e['peak_rss_gb']} GB |" for e in r["exports"]]
        L += ["", "Per step (the exporter's `-v` lines: wall s / peak RSS so far GB):", ""]
        L += ["| step | " + " | ".join(f"{e['tile']}²" for e in r["exports"]) + " |"]
        L += ["|---|" + "---|" * len(r["exports"])]
        names = list(dict.fromkeys(s["step"] for e in r["exports"] for s in e.get("steps", [])))
        for n in names:
            cells = []
            for e in r["exports"]:
                st = next((s for s in e.get("steps", []) if s["step"] == n), None)
                cells.append("–" if st is None else f"{st['seconds']:.0f} / {st['peak_so_far_gb']:.2f}")
            L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += ["", "**Targets** (batch 1):", ""] + [f"- {t}" for t in _targets(r)]
    L += ["", "**Cold start** (fresh process: load + verify the bundle, open ort-cpu, first tile):", ""]
    L += [
        "| tile, precision | cache | load+verify s | session s | first call s | total s |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in r["cold_start"].items():
        for run, c in v.items():
            L.append(
                f"| {k} | {run} | {c['load_verify_s']:.2f} | {c['session_s']:.2f} | {c['first_call_s']:.2f} | "
                f"{c['total_s']:.2f} |"
            )
    for t, prof in r["int8_cpu_profile"].items():
        if prof:
            L += ["", f"**Where the int8-cpu time goes** ({t}², batch 1, onnxruntime profiler, top op types):", ""]
            L += [", ".join(f"{p['op']} {p['ms_per_run']:.0f} ms ({100 * p['share']:.0f} %)" for p in prof)]
    return "\n".join(L) + "\n"


def _targets(r: dict) -> list[str]:
    """Issue 13's targets, met or not, from this run's rows."""
    pk = r["gemm_peaks"]
    out = [
        f"ceiling for any INT8 graph here: onnxruntime's U8S8 MatMulInteger peak / its FP32 GEMM peak = "
        f"{pk['u8s8_gops'] / pk['fp32_gflops']:.2f}× (every FLOP in a quantised GEMM, at FP32's efficiency)"
    ]
    p50 = {(x["tile"], x["batch"], x["config"]): x["p50_ms"] for x in r["rows"] if x.get("p50_ms")}
    peers = ("pytorch eager", "torch.compile inductor", "openvino fp32")
    for tile in sorted({t for t, _, _ in p50}):
        fp32 = p50.get((tile, 1, "ort fp32"))
        if fp32 is None:
            continue
        q = p50.get((tile, 1, "ort int8-cpu"))
        if q:
            x = fp32 / q
            goal = TARGETS["int8_cpu_vs_fp32"]
            out.append(
                f"{tile}²: ORT INT8 (CPU) {x:.3f}× ORT FP32 (target ≥ {goal}×: {'met' if x >= goal else 'not met'})"
            )
            out += _int8_ceiling(r, tile, fp32, q)
        eager = p50.get((tile, 1, "pytorch eager"))
        if eager:
            x = eager / fp32
            goal = TARGETS["ort_fp32_vs_eager"]
            out.append(
                f"{tile}²: ORT FP32 {x:.3f}× PyTorch eager (target ≥ {goal}×: {'met' if x >= goal else 'not met'})"
            )
        timed = {c: p50[(tile, 1, c)] for c in peers if (tile, 1, c) in p50}
        if timed:
            best = min(timed, key=timed.get)
            x = timed[best] / fp32
            goal = TARGETS["ort_fp32_vs_best_peer"]
            out.append(
                f"{tile}²: ORT FP32 at {x:.3f}× the speed of the fastest peer ({best}; target ≥ {goal}: "
                f"{'met' if x >= goal else 'not met'})"
            )
    return out


def _int8_ceiling(r: dict, tile: int, fp32_ms: float, q_ms: float) -> list[str]:
    """The most the dynamic int8-cpu graph could gain here: its quantised MatMuls at onnxruntime's U8S8 peak,
    everything else as measured (the profile's other ops: attention, convolutions, norms, softmax)."""
    linear = (r.get("linear_gflop_per_tile") or {}).get(str(tile)) or (r.get("linear_gflop_per_tile") or {}).get(tile)
    prof = (r.get("int8_cpu_profile") or {}).get(str(tile)) or (r.get("int8_cpu_profile") or {}).get(tile) or []
    dq = next((p["ms_per_run"] for p in prof if p["op"] == "DynamicQuantizeMatMul"), None)
    if not linear or dq is None:
        return []
    peak = r["gemm_peaks"]["u8s8_gops"]
    gops, at_peak = 1e3 * linear / dq, 1e3 * linear / peak
    best = q_ms - dq + at_peak
    return [
        f"{tile}²: the quantised MatMuls ({linear:.1f} GFLOP, the linear layers) take {dq:.0f} ms = {gops:.0f} GOP/s "
        f"({100 * gops / peak:.0f} % of the U8S8 peak); at the peak they would take {at_peak:.0f} ms, the rest "
        f"staying as measured ({q_ms - dq:.0f} ms): ceiling {fp32_ms / best:.2f}× ORT FP32 for this form on this CPU"
    ]


def _chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["rows"] if x.get("p50_ms") is not None]
    groups = sorted({(x["tile"], x["batch"]) for x in rows})
    configs = list(dict.fromkeys(x["config"] for x in rows))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    w = 0.8 / max(1, len(configs))
    for k, c in enumerate(configs):
        ys = [
            next((x["vs_ort_fp32"] for x in rows if (x["tile"], x["batch"]) == g and x["config"] == c), 0)
            for g in groups
        ]
        ax.bar([i + k * w for i in range(len(groups))], ys, w, label=c)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(groups))], [f"{t}² b{b}" for t, b in groups])
    ax.set_ylabel("speed vs ORT FP32")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
