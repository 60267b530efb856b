"""`co2s-bench --doctor`: what this machine can run, and for each backend that it cannot, why and the next step.

Nothing is started on the GPU and no session is built: the checks are the ones the backends make before they
start (package, provider, a CUDA device asked of the driver, the native libraries each provider loads). With a
bundle, each backend that can run also lists the bundle's artefacts it would take.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
from dataclasses import dataclass

from co2s.bundle import Bundle
from co2s.errors import BackendUnavailable

from .backends.gpu_probe import CudaDevices, cuda_devices, ort_provider_library, ort_tensorrt_libraries
from .backends.ort import INSTALL_HINT, preload_cuda

DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt_cu13_bindings",
    "tensorrt_cu12_bindings",
    "pycuda",
    "cuda-python",
    "cuda-bindings",
)
TENSORRT_INSTALL = (
    "pip install 'co2s[gpu]' (TensorRT 10) or 'co2s[gpu-trt11]' (TensorRT 11) on x86-64; on Jetson TensorRT comes "
    "with JetPack: sudo apt install python3-libnvinfer"
)
NO_GPU_NEXT = "run it on the machine with the NVIDIA GPU; here use --backend ort-cpu"


@dataclass
class Check:
    backend: str
    ready: bool
    detail: str  # what was found (ready) or why it cannot run
    next_step: str | None = None
    artefacts: tuple[str, ...] = ()


def installed() -> dict[str, str]:
    """Installed versions of the GPU-related distributions (absent ones left out)."""
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_tensorrt(gpu: CudaDevices) -> Check:
    if not has_module("tensorrt"):
        return Check("tensorrt", False, "the TensorRT Python package is not installed", TENSORRT_INSTALL)
    if not has_module("pycuda"):
        return Check(
            "tensorrt",
            False,
            "pycuda is not installed",
            "pip install pycuda (it builds against the CUDA toolkit's headers; JetPack has them)",
        )
    if not gpu:
        return Check("tensorrt", False, f"no CUDA device ({gpu.detail})", NO_GPU_NEXT)
    from .backends.tensorrt import import_tensorrt

    try:
        trt, cuda = import_tensorrt()
        device = cuda.Device(0)
        cc = device.compute_capability()
        name = device.name()
    except BackendUnavailable as e:
        return Check(
            "tensorrt", False, str(e).removeprefix("tensorrt: "), "see the message; nvidia-smi should list the GPU"
        )
    return Check("tensorrt", True, f"TensorRT {trt.__version__} on {name} (sm_{cc[0]}{cc[1]})")


def check_ort(name: str, gpu: CudaDevices, ort) -> Check:
    provider = {"ort-trt": "TensorrtExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}.get(
        name, "CPUExecutionProvider"
    )
    if ort is None:
        return Check(name, False, "onnxruntime is not installed", INSTALL_HINT[name])
    have = ort.get_available_providers()
    if provider not in have:
        return Check(name, False, f"this onnxruntime has no {provider} (it has {', '.join(have)})", INSTALL_HINT[name])
    version = f"onnxruntime {ort.__version__}"
    if name == "ort-cpu":
        return Check(name, True, version)
    if not gpu:  # onnxruntime-gpu lists its GPU providers on any machine
        return Check(name, False, f"{version} has {provider}, but there is no CUDA device ({gpu.detail})", NO_GPU_NEXT)
    preload_cuda(ort)
    if name == "ort-trt" and (why := ort_tensorrt_libraries()):
        return Check(
            name,
            False,
            f"its TensorRT provider needs TensorRT 10: {why}",
            "pip install 'co2s[gpu]' (tensorrt-cu13 10.x); TensorRT 11 runs through --backend tensorrt only",
        )
    why = ort_provider_library(ort, "tensorrt" if name == "ort-trt" else "cuda")
    if why and "cannot open shared object file" in why:
        return Check(name, False, f"its provider library cannot load: {why}", INSTALL_HINT[name])
    note = f"; could not check its provider library ({why})" if why else ""
    return Check(name, True, f"{version} with {provider}, {gpu.detail}{note}")


def bundle_artefacts(bundle: Bundle, check: Check) -> tuple[str, ...]:
    """The bundle's artefacts this (ready) backend would take: engines that match this TensorRT and GPU, ONNX
    models (int8-cpu only on the CPU)."""
    if check.backend == "tensorrt":
        from .backends.tensorrt import engine_mismatch, import_tensorrt

        trt, cuda = import_tensorrt()
        device = cuda.Device(0)
        cc, name = tuple(device.compute_capability()), device.name()
        out = []
        for p in bundle.precisions("engine"):
            why = engine_mismatch(bundle.artefact("engine", p), trt.__version__, cc, name)
            out.append(f"engine {p}" + (f" (not here: {why})" if why else ""))
        return tuple(out) or ("no TensorRT engine (co2s-export --from-bundle B --engine fp16 builds one here)",)
    onnx = [p for p in bundle.precisions("onnx") if check.backend == "ort-cpu" or p != "int8-cpu"]
    return tuple(f"onnx {p}" for p in onnx) or ("no ONNX model it can run",)


def doctor(bundle: Bundle | None = None) -> tuple[dict, list[Check]]:
    gpu = cuda_devices()
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    checks = [check_tensorrt(gpu)] + [check_ort(n, gpu, ort) for n in ("ort-trt", "ort-cuda", "ort-cpu")]
    if bundle is not None:
        for c in checks:
            if c.ready:
                c.artefacts = bundle_artefacts(bundle, c)
    machine = {
        "machine": f"{platform.machine()}, {platform.platform()}, Python {platform.python_version()}",
        "cuda": f"{gpu.count} device(s): {gpu.detail}" if gpu else f"none: {gpu.detail}",
        "packages": installed(),
    }
    return machine, checks


def render(machine: dict, checks: list[Check]) -> str:
    pkgs = machine["packages"]
    lines = [
        f"machine:     {machine['machine']}",
        f"CUDA device: {machine['cuda']}",
        "packages:    " + (", ".join(f"{k} {v}" for k, v in pkgs.items()) or "none of the GPU packages"),
    ]
    if "onnxruntime" in pkgs and "onnxruntime-gpu" in pkgs:
        lines.append(
            "warning:     onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files: "
            "pip uninstall -y onnxruntime onnxruntime-gpu, then install one (co2s[cpu] or co2s[gpu])"
        )
    lines.append("")
    for c in checks:
        lines.append(f"{c.backend:<9} {'ready' if c.ready else 'no':<6} {c.detail}")
        if c.next_step:
            lines.append(f"{'':<16} next: {c.next_step}")
        for a in c.artefacts:
            lines.append(f"{'':<16} runs {a}")
    best = next((c.backend for c in checks if c.ready), None)
    lines.append("")
    lines.append(
        f"first ready backend: {best} (--backend auto takes the first ready one the bundle has an artefact for)"
        if best
        else "no backend can run here: pip install 'co2s[cpu]' for the CPU"
    )
    return "\n".join(lines)
