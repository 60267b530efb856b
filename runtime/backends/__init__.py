"""Backend choice: `--backend auto` takes the fastest one that is installed, sees a GPU and has a matching artefact.

Order: native TensorRT (an engine built for this TensorRT and GPU), onnxruntime's TensorRT EP, its CUDA EP, its
CPU EP. A GPU provider is tried only where the CUDA driver sees a device (gpu_probe), and one that cannot start
(libraries missing, onnxruntime falling back to the CPU) is BackendUnavailable: auto logs why and takes the next. `--precision auto` never takes a precision that failed its parity gate at export (a bundle keeps one only
with --allow-degraded; naming it, e.g. `--precision int8`, runs it with a warning). On a GPU it is the first of
fp16, fp32, int8 the bundle has (never int8-cpu, which is shaped for onnxruntime's CPU kernels); on onnxruntime's
CPU it is the fastest of the bundle's CPU precisions, measured once on this machine and cached (choose.py). The
backend says why in `precision_reason`, which co2s-bench and co2s-infer --profile print.
"""

from __future__ import annotations

import logging
import time

from co2s.bundle import Bundle
from co2s.bundle.formats import PRECISIONS
from co2s.errors import Co2SInputError

from .base import Backend, BackendInfo, Pending
from .choose import CPU_PRECISIONS, Measure, choose_cpu_precision
from .gpu_probe import cuda_devices
from .ort import BackendUnavailable, OrtBackend, available_providers

log = logging.getLogger("co2s.runtime")

BACKENDS = ("auto", "tensorrt", "ort-trt", "ort-cuda", "ort-cpu")
PRECISION_CHOICES = ("auto",) + PRECISIONS
GPU_AUTO_ORDER = ("fp16", "fp32", "int8")
MEASURED = "auto"  # what _precision_for answers for the CPU: resolved by measurement once the CPU is the one tried

__all__ = [
    "BACKENDS",
    "PRECISION_CHOICES",
    "Backend",
    "BackendInfo",
    "BackendUnavailable",
    "Pending",
    "open_backend",
    "auto_candidates",
]


def _precision_for(bundle: Bundle, requested: str, *, gpu: bool, kind: str = "onnx") -> str | None:
    have = bundle.precisions(kind)
    if requested != "auto":
        return requested if requested in have else None
    order = GPU_AUTO_ORDER if gpu else CPU_PRECISIONS
    passing = [p for p in order if p in have and bundle.parity_passed(p)]
    if not passing:
        return None
    return passing[0] if gpu else MEASURED


def auto_candidates(bundle: Bundle, precision: str) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth trying, best first; the CPU's `auto` is measured when it is reached."""
    out = []
    p = _precision_for(bundle, precision, gpu=True, kind="engine")
    if p:
        out.append(("tensorrt", p))
    provs = available_providers()
    for name, prov in (("ort-trt", "TensorrtExecutionProvider"), ("ort-cuda", "CUDAExecutionProvider")):
        p = _precision_for(bundle, precision, gpu=True)
        if prov in provs and p:
            if gpu := cuda_devices():  # the provider list says what onnxruntime was built with, not a GPU
                out.append((name, p))
            else:
                log.info("skipping %s: onnxruntime has %s but there is no CUDA device (%s)", name, prov, gpu.detail)
    p = _precision_for(bundle, precision, gpu=False)
    if p:
        out.append(("ort-cpu", p))
    return out


def open_backend(
    bundle: Bundle,
    backend: str = "auto",
    precision: str = "auto",
    *,
    device_id: int = 0,
    cuda_graph: bool = False,
    threads: int | None = None,
    measure: Measure | None = None,
) -> Backend:
    """The backend that runs `bundle`; `measure` replaces the CPU precision race's timer (choose.time_precisions)."""
    if backend not in BACKENDS:
        raise Co2SInputError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISION_CHOICES:
        raise Co2SInputError(f"--precision {precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    t0 = time.perf_counter()
    kw = dict(device_id=device_id, cuda_graph=cuda_graph, threads=threads, measure=measure)
    if backend != "auto":
        kind = "engine" if backend == "tensorrt" else "onnx"
        p = _precision_for(bundle, precision, gpu=backend != "ort-cpu", kind=kind)
        if p is None:
            raise Co2SInputError(_missing(bundle, precision, kind))
        be = _open(bundle, backend, p, auto=precision == "auto", **kw)
    else:
        be = _open_auto(bundle, precision, kw)
    be.open_s = time.perf_counter() - t0
    return be


def _open_auto(bundle: Bundle, precision: str, kw: dict) -> Backend:
    reasons = []
    for name, p in auto_candidates(bundle, precision):
        try:
            return _open(bundle, name, p, auto=precision == "auto", **kw)
        except BackendUnavailable as e:
            reasons.append(str(e))
            log.info("skipping %s: %s", name, e)  # --backend auto says why it fell back
        except Co2SInputError as e:
            if name == "tensorrt":  # e.g. engine built for another GPU: say so, then use the ONNX model
                log.warning("%s; falling back to onnxruntime", e)
                reasons.append(str(e))
                continue
            raise
    have = ", ".join(bundle.precisions("onnx")) or "none"
    failed = [p for p in bundle.precisions("onnx") if not bundle.parity_passed(p)]
    if precision == "auto" and failed:
        reasons.append(f"auto never takes a precision that failed parity ({', '.join(failed)}): name it to run it")
    raise Co2SInputError(
        f"no backend can run bundle {bundle.root} at precision {precision} (ONNX precisions: {have})"
        + ("; " + "; ".join(reasons) if reasons else "")
    )


def _missing(bundle: Bundle, precision: str, kind: str) -> str:
    have = ", ".join(bundle.precisions(kind)) or "none"
    what = "TensorRT engine" if kind == "engine" else "ONNX model"
    if precision == "auto":
        failed = [p for p in bundle.precisions(kind) if not bundle.parity_passed(p)]
        if failed:  # the bundle has artefacts, none that auto may take
            return (
                f"bundle {bundle.root}: every {what} failed its parity gate at export ({', '.join(failed)}), "
                f"and --precision auto takes none of them; name one to run it anyway (e.g. --precision {failed[0]})"
            )
    msg = f"bundle {bundle.root} has no {precision} {what} (it has: {have})"
    if kind == "engine":
        want = precision if precision != "auto" else "fp16"
        msg += f"; build one: co2s-export --from-bundle {bundle.root} --engine {want}"
    return msg


def _open(bundle: Bundle, name: str, precision: str, *, auto: bool, measure: Measure | None = None, **kw) -> Backend:
    reason = None
    if precision == MEASURED:  # only the CPU's auto is measured (_precision_for)
        choice = choose_cpu_precision(bundle, threads=kw["threads"], measure=measure)
        precision, reason = choice.precision, choice.reason
    elif auto:
        reason = f"precision auto -> {precision}: the first of {', '.join(GPU_AUTO_ORDER)} that passed parity (GPU)"
    else:
        reason = _asked_for(bundle, precision)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        be = TensorRTBackend(bundle, precision, device_id=kw["device_id"], cuda_graph=kw["cuda_graph"])
    else:
        be = OrtBackend(bundle, precision, name, device_id=kw["device_id"], threads=kw["threads"])
    be.precision_reason = reason
    return be


def _asked_for(bundle: Bundle, precision: str) -> str:
    """The reason of a precision named by the caller; one that failed parity at export runs with a warning."""
    if bundle.parity_passed(precision):
        return f"precision {precision}: asked for by name"
    rec = bundle.parity.get(precision) or {}
    numbers = ""
    if isinstance(rec.get("pixel_agreement"), (int, float)) and isinstance(rec.get("threshold"), (int, float)):
        numbers = f" (pixel agreement {100 * rec['pixel_agreement']:.2f} % < {100 * rec['threshold']:.2f} %)"
    log.warning(
        "bundle %s: %s failed its parity gate at export%s; running it because it was asked for by name",
        bundle.root,
        precision,
        numbers,
    )
    return f"precision {precision}: asked for by name, although it failed parity at export{numbers}"
