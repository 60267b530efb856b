"""Backend choice: `--backend auto` takes the fastest one that is installed, sees a GPU and has a matching artefact.

Order: native TensorRT (an engine built for this TensorRT and GPU), onnxruntime's TensorRT EP, its CUDA EP, its
CPU EP. `--precision auto` is fp16 on a GPU and fp32 on the CPU (INT8 is opt-in: check the bundle's parity
report first), falling back to whatever precision the bundle has.
"""

from __future__ import annotations

import logging

from co2s.bundle import Bundle
from co2s.bundle.formats import PRECISIONS
from co2s.errors import Co2SInputError

from .base import Backend, BackendInfo, Pending
from .ort import BackendUnavailable, OrtBackend, available_providers

log = logging.getLogger("co2s.runtime")

BACKENDS = ("auto", "tensorrt", "ort-trt", "ort-cuda", "ort-cpu")
PRECISION_CHOICES = ("auto",) + PRECISIONS

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
    for p in ("fp16", "fp32", "int8") if gpu else ("fp32", "fp16", "int8"):
        if p in have:
            return p
    return None


def auto_candidates(bundle: Bundle, precision: str) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth trying, best first."""
    out = []
    p = _precision_for(bundle, precision, gpu=True, kind="engine")
    if p:
        out.append(("tensorrt", p))
    provs = available_providers()
    for name, prov in (("ort-trt", "TensorrtExecutionProvider"), ("ort-cuda", "CUDAExecutionProvider")):
        p = _precision_for(bundle, precision, gpu=True)
        if prov in provs and p:
            out.append((name, p))
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
) -> Backend:
    if backend not in BACKENDS:
        raise Co2SInputError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISION_CHOICES:
        raise Co2SInputError(f"--precision {precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    if backend != "auto":
        kind = "engine" if backend == "tensorrt" else "onnx"
        p = _precision_for(bundle, precision, gpu=backend != "ort-cpu", kind=kind)
        if p is None:
            have = ", ".join(bundle.precisions(kind)) or "none"
            what = "TensorRT engine" if kind == "engine" else "ONNX model"
            msg = f"bundle {bundle.root} has no {precision} {what} (it has: {have})"
            if kind == "engine":
                want = precision if precision != "auto" else "fp16"
                msg += f"; build one: co2s-export --from-bundle {bundle.root} --engine {want}"
            raise Co2SInputError(msg)
        return _open(bundle, backend, p, device_id=device_id, cuda_graph=cuda_graph, threads=threads)
    reasons = []
    for name, p in auto_candidates(bundle, precision):
        try:
            return _open(bundle, name, p, device_id=device_id, cuda_graph=cuda_graph, threads=threads)
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
    raise Co2SInputError(
        f"no backend can run bundle {bundle.root} at precision {precision} (ONNX precisions: {have})"
        + ("; " + "; ".join(reasons) if reasons else "")
    )


def _open(bundle: Bundle, name: str, precision: str, **kw) -> Backend:
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, precision, device_id=kw["device_id"], cuda_graph=kw["cuda_graph"])
    return OrtBackend(bundle, precision, name, device_id=kw["device_id"], threads=kw["threads"])
