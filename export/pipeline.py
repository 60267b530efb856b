"""checkpoint (or an untrained plan) -> bundle: the export as one typed API call; the CLI is a thin wrapper.

Order matters for "no partial bundle": every cheap check on the options runs before torch is imported,
all artefacts are written into a temporary folder, and that folder becomes the bundle only after the
audit and the parity thresholds passed. Engines are built afterwards, from the committed bundle, by the
same torch-free code path that `--from-bundle` uses on the target device.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import platform
import time
from pathlib import Path

import numpy as np

from co2s.bundle import formats, sha256_file
from co2s.bundle.manifest import FORMAT, SCHEMA_VERSION
from co2s.cli import step_progress
from co2s.errors import Co2SInputError

from .engines import add_engines
from .options import BOTH, ExportCheckError, ExportOptions, ExportResult, default_calib_count
from .writer import AtomicBundle, check_output_dir, check_output_writable, clean_leftovers

_debug = logging.getLogger("co2s.export").debug


def parse_batch(batch: int | None, dynamic: str | None) -> tuple[int, int, int]:
    if batch is not None and dynamic is not None:
        raise Co2SInputError("--batch and --dynamic-batch are exclusive: a fixed batch, or MIN:OPT:MAX")
    if dynamic is not None:
        try:
            lo, opt, hi = (int(v) for v in dynamic.split(":"))
        except ValueError:
            raise Co2SInputError(f"--dynamic-batch expects MIN:OPT:MAX (e.g. 1:4:8), got {dynamic!r}") from None
        if not 1 <= lo <= opt <= hi or lo == hi:
            raise Co2SInputError(f"--dynamic-batch {dynamic}: need 1 <= MIN <= OPT <= MAX and MIN < MAX")
        return lo, opt, hi
    b = 1 if batch is None else batch
    if b < 1:
        raise Co2SInputError(f"--batch must be at least 1, got {b}")
    return b, b, b


def _versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    import co2s

    return {
        "co2s": co2s.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------- the model
def load_model(opts: ExportOptions):
    """(Co2S in eval mode, preset name, dataset dict, checkpoint record or None, tile, training config or None)."""
    import torch

    from co2s.train.model import build_co2s, co2s_from_state, get_preset

    info = None
    if opts.dataset:
        from co2s.train.data import get_dataset_info

        info = get_dataset_info(opts.dataset)
    if opts.untrained:
        preset = opts.preset or "paper"
        p = get_preset(preset)
        n = opts.num_classes or (info.num_classes if info else None)
        if n is None:
            raise Co2SInputError("--untrained needs --num-classes N (or --dataset NAME)")
        if info is not None and info.num_classes != n:
            raise Co2SInputError(
                f"--num-classes {n} differs from dataset {info.name!r}, which has {info.num_classes} classes"
            )
        tile = opts.tile or p.tile
        torch.manual_seed(opts.seed)
        from co2s.train.backbones import build_backbone

        text_dim = build_backbone(p.backbones["clip"], img_size=tile).text_dim
        protos = np.random.default_rng(opts.seed).standard_normal((n, text_dim)).astype(np.float32)
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        model = build_co2s(n, preset=preset, prototypes=protos, img_size=tile)
        dataset = (
            {"name": info.name, "classes": list(info.classes), "palette": [list(c) for c in info.palette]}
            if info
            else {
                "name": "untrained",
                "classes": [f"class_{i}" for i in range(n)],
                "palette": [list(c) for c in formats.DEFAULT_PALETTE[:n]],
            }
        )
        return model.eval(), preset, dataset, None, tile, None

    from co2s.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(opts.checkpoint)
    have = ckpt["model_config"]["num_classes"]
    if info is not None and info.num_classes != have:
        raise Co2SInputError(
            f"{opts.checkpoint}: the checkpoint has {have} classes but dataset {info.name!r} has "
            f"{info.num_classes} ({', '.join(info.classes)}); export with the dataset it was trained on"
        )
    if opts.num_classes is not None and opts.num_classes != have:
        raise Co2SInputError(
            f"{opts.checkpoint}: the checkpoint has {have} classes, --num-classes says {opts.num_classes}"
        )
    try:
        model = co2s_from_state(ckpt["model_config"], ckpt["model"])
    except (RuntimeError, KeyError) as e:  # state dict does not fit the recorded config
        raise Co2SInputError(f"{opts.checkpoint}: the model weights do not match its model_config ({e})") from None
    if info is not None:
        dataset = {"name": info.name, "classes": list(info.classes), "palette": [list(c) for c in info.palette]}
    else:
        d = ckpt["dataset"]
        dataset = {"name": d["name"], "classes": list(d["classes"]), "palette": [list(c) for c in d["palette"]]}
    preset = ckpt["model_config"]["preset"]
    tile = opts.tile or ckpt["model_config"].get("img_size") or get_preset(preset).tile
    record = {"name": Path(opts.checkpoint).name, "sha256": sha256_file(opts.checkpoint)}
    return model.eval(), preset, dataset, record, tile, ckpt.get("train_config")


def _student_names(model, choice: str) -> tuple[str, ...]:
    names = tuple(model.students)
    if choice == BOTH:
        return names
    picked = tuple(n for n in names if n == choice or n.startswith(f"{choice}_"))
    if not picked:
        raise Co2SInputError(f"--students {choice}: this model has no such student (it has {', '.join(names)})")
    return picked


# ------------------------------------------------------------------------------------------ export
def export_bundle(opts: ExportOptions) -> ExportResult:
    log = opts.log
    t_start = time.perf_counter()
    # cheap checks first: nothing heavy is imported and nothing is written if these fail
    if opts.tile is not None:
        formats.check_model_input(opts.tile, "--tile")
    for msg in clean_leftovers(opts.out):  # what a killed export left: may put a previous bundle back first
        log(msg)
    check_output_dir(opts.out, opts.force)
    check_output_writable(opts.out)
    if opts.students not in (BOTH, "clip", "dinov3"):
        raise Co2SInputError(f"--students must be clip, dinov3 or both, got {opts.students!r}")
    if opts.calib_count is not None and opts.calib_count < max(1, opts.batch[0]):
        raise Co2SInputError(
            f"--calib-count must be at least {max(1, opts.batch[0])} (one batch), got {opts.calib_count}"
        )
    if opts.calib_data is not None:
        from .calibration import list_images

        list_images(opts.calib_data)
    if not opts.untrained:
        if opts.checkpoint is None:
            raise Co2SInputError("give --checkpoint FILE, or --untrained to plan a deployment before training")
        if not Path(opts.checkpoint).is_file():
            raise Co2SInputError(f"--checkpoint {opts.checkpoint}: file not found")
    precisions = tuple(p for p in formats.PRECISIONS if p in set(opts.precisions) | set(opts.engines) | {"fp32"})

    from co2s.runtime.heap import limit_heap_retention

    # weights, graphs and sessions of hundreds of MB are allocated and freed step after step: with glibc's
    # moving mmap threshold their freed blocks stay in the heap and the next step's peak lands on top of them
    limit_heap_retention()
    # steps: model, reference, fp32 export, fp32 parity, then a conversion and a parity run per other precision
    with _quiet_exporters(), _measured_steps(4 + 2 * (len(precisions) - 1)) as steps:
        return _export(opts, log, t_start, precisions, steps)


class _MeasuredSteps:
    """The step bar, plus a debug line (-v) as each step ends: its wall time and the process RSS then (current,
    and the peak so far), so a memory regression shows which step it came from."""

    def __init__(self, bar):
        self._bar, self._name, self._t0 = bar, None, 0.0

    def next(self, name: str) -> None:
        self.end()
        self._name, self._t0 = name, time.perf_counter()
        self._bar.next(name)

    def end(self) -> None:
        from co2s.runtime.profiler import current_host_memory_mb, peak_host_memory_mb

        if self._name is not None:
            now, peak = current_host_memory_mb(), peak_host_memory_mb()
            _debug(
                f"step {self._name!r}: {time.perf_counter() - self._t0:.1f} s, "
                f"RSS {(now or 0) / 1024:.2f} GB, peak so far {(peak or 0) / 1024:.2f} GB"
            )
        self._name = None


@contextlib.contextmanager
def _measured_steps(total: int):
    with step_progress(total, "co2s-export") as bar:
        steps = _MeasuredSteps(bar)
        try:
            yield steps
        finally:
            steps.end()


@contextlib.contextmanager
def _quiet_exporters():
    """The exporters' per-op optimiser chatter ("Skipping constant folding...") is not actionable for users."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(opts: ExportOptions, log, t_start: float, precisions: tuple[str, ...], steps) -> ExportResult:
    from .audit import audit_file
    from .calibration import load_calibration
    from .deploy import DeployConfig, DeployModel, reference_predict
    from .onnx_export import count_nodes, export_deploy_onnx
    from .parity import THRESHOLDS, fp32_vs_pytorch, judge, run_onnx, vs_fp32

    steps.next("loading the model and the calibration tiles")
    model, preset, dataset, ckpt_record, tile, train_config = load_model(opts)
    formats.check_model_input(tile, "--tile")
    students = _student_names(model, opts.students)
    config = DeployConfig(students, opts.fusion, tile, opts.probs)
    count = opts.calib_count if opts.calib_count is not None else max(default_calib_count(tile), opts.batch[0])
    calib = load_calibration(opts.calib_data, count, tile, train_config)
    images = calib.images
    log(
        f"{len(students)} student(s) {', '.join(students)}; tile {tile}; {len(images)} calibration/parity tiles "
        f"({calib.source['kind']})"
    )

    # reference on the unfolded training model, before anything is patched for export
    steps.next("PyTorch reference predictions")
    ref_parts = [reference_predict(model, students, opts.fusion, images[i : i + 4]) for i in range(0, len(images), 4)]
    ref = {k: np.concatenate([r[k] for r in ref_parts]) for k in ref_parts[0]}

    deploy = DeployModel(model, config)
    run_batch = opts.batch[2] if opts.batch[0] != opts.batch[2] else opts.batch[0]
    parity: dict = {
        "images": int(len(images)),
        "thresholds": dict(THRESHOLDS),
        "degraded_allowed": bool(opts.allow_degraded),
    }
    artifacts: dict = {}
    precision_info: dict = {}
    if opts.untrained:
        # Random weights give near-uniform class probabilities: label agreement between precisions is then
        # decided by noise-level margins and says nothing about a trained model. Report, do not enforce.
        parity["note"] = "untrained model: FP16/INT8 agreement is reported but not enforced"

    with AtomicBundle(opts.out, opts.force, log=log) as tmp:
        fmt = formats.get_format("onnx", "fp32")
        fp32_path = tmp / fmt.filename
        log(f"exporting {fmt.filename} (torch dynamo exporter, opset 19)...")
        steps.next("exporting the fp32 ONNX")
        # the PyTorch weights are done once traced (the reference ran above): freed before the ONNX clean-up
        stats = export_deploy_onnx(deploy, fp32_path, tile=tile, batch=opts.batch, after_trace=lambda: model.to("meta"))
        _audit_or_fail(audit_file(fp32_path), fmt.filename)
        log(f"  {stats.nodes_exported} nodes exported, {stats.nodes_clean} after clean-up, {stats.seconds:.0f} s")
        steps.next("fp32 parity")
        outs = {"fp32": run_onnx(fp32_path, images, batch=run_batch)}
        parity["fp32"] = judge("fp32", fp32_vs_pytorch(outs["fp32"], ref))
        precision_info["fp32"] = {"export_seconds": round(stats.seconds, 1)}

        truth = calib.truth_for(dataset["classes"])
        for precision in precisions[1:]:
            fmt = formats.get_format("onnx", precision)
            path = tmp / fmt.filename
            t0 = time.perf_counter()
            steps.next(_CONVERT_STEPS[precision])
            precision_info[precision] = _convert(precision, fp32_path, path, images, opts, log)
            precision_info[precision]["seconds"] = round(time.perf_counter() - t0, 1)
            if precision != "int8-cpu":  # the CPU INT8 graph is never built with TensorRT
                _audit_or_fail(audit_file(path), fmt.filename)
            steps.next(f"{precision} parity")
            outs[precision] = run_onnx(path, images, batch=run_batch)
            parity[precision] = judge(precision, vs_fp32(outs[precision], outs["fp32"], truth, len(dataset["classes"])))

        for precision in precisions:
            r = parity[precision]
            delta = r.get("miou_delta")
            log(
                f"  parity {precision}: pixel agreement {100 * r['pixel_agreement']:.3f} % "
                f"(threshold {100 * r['threshold']:.2f} %)"
                + (f", mIoU delta {delta:+.2f} ({r['miou_reference']})" if delta is not None else "")
            )
        if not parity["fp32"]["passed"]:  # the reference itself: nothing to compare the others with
            raise ExportCheckError(
                f"parity check failed: fp32 pixel agreement with PyTorch {100 * parity['fp32']['pixel_agreement']:.3f} %"
                f" is below {100 * parity['fp32']['threshold']:.2f} % (nothing was written)"
            )
        failed = _gate(precisions, parity, precision_info, tmp, opts)
        written = tuple(p for p in precisions if precision_info[p].get("written", True))

        from co2s.bundle import artefact_record, write_manifest

        for precision in written:
            fmt = formats.get_format(formats.ONNX, precision)
            artifacts[fmt.key] = artefact_record(tmp, fmt, nodes=count_nodes(tmp / fmt.filename), opset=stats.opset)
            data = formats.get_format(formats.ONNX_DATA, precision)
            if (tmp / data.filename).exists():
                artifacts[data.key] = artefact_record(tmp, data)
        manifest = _manifest(
            opts,
            config,
            deploy,
            model,
            preset,
            dataset,
            ckpt_record,
            artifacts,
            precision_info,
            calib,
            parity,
            stats,
            time.perf_counter() - t_start,
        )
        write_manifest(tmp, manifest)
    log(f"wrote {opts.out} ({', '.join(written)} ONNX) in {time.perf_counter() - t_start:.0f} s")

    result = ExportResult(Path(opts.out), manifest)
    engines = tuple(p for p in opts.engines if p in written)
    for p in sorted(set(opts.engines) - set(engines)):
        log(f"warning: no {p} engine: the {p} ONNX failed its parity gate and was not written")
    if engines:
        result = add_engines(opts.out, engines, workspace_gib=opts.workspace_gib, log=log)
    result.failed_precisions = failed
    if opts.triton_repo is not None and result.engines_deferred is None:
        _write_triton(opts.out, opts.triton_repo, opts.force, log)
    return result


_CONVERT_STEPS = {
    "fp16": "converting to fp16",
    "int8": "calibrating and quantising to int8 (TensorRT Q/DQ)",
    "int8-cpu": "quantising to int8 for onnxruntime's CPU kernels",
}


def _convert(precision: str, fp32_path: Path, path: Path, images: np.ndarray, opts: ExportOptions, log) -> dict:
    """Write the `precision` ONNX from the FP32 one; its record for the manifest's "precisions"."""
    from .cpu_int8 import quantize_int8_cpu
    from .precision import quantize_int8, resolve_int8_method, save_fp16

    calib_batch = opts.batch[0] if opts.batch[0] == opts.batch[2] else 1
    if precision == "fp16":
        log("converting to FP16 with FP32 islands...")
        return save_fp16(fp32_path, path)
    if precision == "int8":
        log(f"quantising to INT8 Q/DQ ({resolve_int8_method(opts.int8_method)}, {len(images)} calibration tiles)...")
        return quantize_int8(fp32_path, path, images, method=opts.int8_method, batch=calib_batch)
    log(f"quantising to INT8 for the CPU ({opts.cpu_int8_form})...")
    return quantize_int8_cpu(fp32_path, path, images, form=opts.cpu_int8_form, batch=calib_batch)


def _gate(precisions, parity: dict, precision_info: dict, tmp: Path, opts: ExportOptions) -> dict[str, str]:
    """Precisions under their parity threshold: {precision: what happened}. A failed precision does not sink the
    bundle: its files are removed and its numbers stay in the manifest ("written": false), or, with
    --allow-degraded, it is kept and flagged ("degraded": true). Untrained models are reported, not gated."""
    failed = {}
    for p in precisions[1:]:
        r = parity[p]
        if r["passed"] or opts.untrained:
            continue
        why = f"pixel agreement {100 * r['pixel_agreement']:.2f} % < {100 * r['threshold']:.2f} %"
        if opts.allow_degraded:
            precision_info[p]["degraded"] = True
            failed[p] = f"{why}; kept, flagged degraded (--allow-degraded)"
            continue
        for kind in (formats.ONNX, formats.ONNX_DATA):
            (tmp / formats.get_format(kind, p).filename).unlink(missing_ok=True)
        precision_info[p]["written"] = False
        failed[p] = f"{why}; not written"
    return failed


def _write_triton(bundle: Path, repo: Path, force: bool, log) -> dict:
    from co2s.bundle import load_bundle

    from .triton import write_triton_repo

    info = write_triton_repo(load_bundle(bundle, verify=True), repo, force=force)
    log(
        f"wrote Triton model {info['path']} ({info['platform']}, {info['precision']}; "
        f"config {'validated with tritonclient' if info['validated'] else 'not validated: tritonclient not installed'})"
    )
    return info


def _audit_or_fail(report, name: str) -> None:
    if not report.ok:
        raise ExportCheckError(f"{name} would not build with TensorRT 10: " + "; ".join(report.errors))


def _manifest(
    opts, config, deploy, model, preset, dataset, ckpt_record, artifacts, precision_info, calib, parity, stats, seconds
) -> dict:
    from .deploy import INPUT_NAME, PROBS_NAME

    lo, opt, hi = opts.batch
    dynamic = lo != hi
    b = "batch" if dynamic else lo
    t = config.tile
    n = len(dataset["classes"])
    outputs = [
        {"name": "labels", "dtype": "uint8", "shape": [b, t, t], "description": "argmax of the fused probabilities"},
        {"name": "confidence", "dtype": "float32", "shape": [b, t, t], "description": "fused top-class probability"},
    ]
    if config.probs:
        outputs.append(
            {
                "name": PROBS_NAME,
                "dtype": "float16",
                "shape": [b, n, t, t],
                "layout": "NCHW",
                "description": "fused class probabilities, for overlapped-tile blending",
            }
        )
    kinds = {name: ("clip" if hasattr(s.backbone, "visual") else "dinov3") for name, s in deploy.students.items()}
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "preset": preset,
            "students": list(config.students),
            "student_kinds": [kinds[s] for s in config.students],
            "fusion": config.fusion,
            "num_classes": n,
            "tile": t,
            "untrained": bool(opts.untrained),
            "checkpoint": ckpt_record,
            "folded": deploy.folded_summary(),
        },
        "dataset": dataset,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [b, t, t, 3],
            "layout": "NHWC",
            "description": "RGB tile, 0-255; normalisation happens in the graph",
        },
        "outputs": outputs,
        "batch": {"dynamic": dynamic, "min": lo, "opt": opt, "max": hi},
        "normalization": {
            "in_graph": True,
            "input_range": [0, 255],
            "students": {
                name: {
                    "mean": list(map(float, model.students[name].backbone.pixel_mean)),
                    "std": list(map(float, model.students[name].backbone.pixel_std)),
                }
                for name in config.students
            },
        },
        "artifacts": artifacts,
        "precisions": precision_info,
        "calibration": {**calib.source, "method": precision_info.get("int8", {}).get("method")},
        "parity": parity,
        "producer": {**_versions(), "opset": stats.opset},
        "export": {
            "seconds": round(seconds, 1),
            "nodes_exported": stats.nodes_exported,
            "nodes_after_cleanup": stats.nodes_clean,
            "onnx_export_seconds": round(stats.seconds, 1),
        },
    }
