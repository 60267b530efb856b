"""What this machine has for the GPU backends: a CUDA device, asked of the CUDA driver, and the native libraries
onnxruntime's GPU providers load.

A GPU is never inferred from onnxruntime's provider list: onnxruntime-gpu lists CUDAExecutionProvider (and
TensorrtExecutionProvider) on a machine without any GPU, because the list says what the build has, not what the
machine can run. The driver library (libcuda.so.1, part of the NVIDIA driver on a server and of JetPack on a
Jetson) answers without any Python package: cuInit and cuDeviceGetCount, as pycuda and cuda-python do underneath.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

DRIVER_LIBRARY = "libcuda.so.1"
# device nodes of the NVIDIA driver: desktop/server GPUs, then a Jetson's integrated GPU (JetPack 5, JetPack 6)
DEVICE_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl")
# what onnxruntime-gpu's TensorRT provider links (readelf -d libonnxruntime_providers_tensorrt.so, 1.31.1)
ORT_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvonnxparser.so.10")


@dataclass(frozen=True)
class CudaDevices:
    """How many CUDA devices the driver sees (0: none usable) and how that was found, or why there are none."""

    count: int
    detail: str
    driver: str | None = None  # the CUDA version the driver supports, e.g. "13.0"

    def __bool__(self) -> bool:
        return self.count > 0


def load_driver():
    """The CUDA driver library (OSError where there is no NVIDIA driver)."""
    return ctypes.CDLL(DRIVER_LIBRARY)


@functools.cache
def cuda_devices() -> CudaDevices:
    """The CUDA devices of this machine, asked once per process (a GPU does not come and go while it runs)."""
    if os.environ.get("CO2S_FORCE_NO_GPU") == "1":  # tests and dry runs on GPU machines
        return CudaDevices(0, "CO2S_FORCE_NO_GPU=1 hides the GPU")
    nodes = [n for n in DEVICE_NODES if Path(n).exists()]
    try:
        lib = load_driver()
    except OSError:
        if nodes:
            return CudaDevices(
                0,
                f"{nodes[0]} exists but the NVIDIA driver library {DRIVER_LIBRARY} cannot be loaded (a container "
                "started without the NVIDIA container runtime, e.g. docker run without --gpus all?)",
            )
        return CudaDevices(0, f"no NVIDIA driver ({DRIVER_LIBRARY} not found) and no NVIDIA device node")
    status = lib.cuInit(0)
    if status != 0:
        return CudaDevices(0, f"the CUDA driver cannot start: cuInit returned {_error_name(lib, status)}")
    version = ctypes.c_int(0)
    driver = None
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return CudaDevices(0, f"cuDeviceGetCount returned {_error_name(lib, status)}", driver)
    if count.value == 0:
        return CudaDevices(0, "the CUDA driver sees no device", driver)
    return CudaDevices(count.value, f"{count.value} CUDA device(s), driver for CUDA {driver or '?'}", driver)


def _error_name(lib, status: int) -> str:
    name = ctypes.c_char_p()
    if lib.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value:
        return f"{name.value.decode()} ({status})"
    return f"error {status}"


def tensorrt_wheel_library(soname: str) -> Path | None:
    """`soname` in the pip TensorRT wheel (package tensorrt_libs), which is on no library path by itself."""
    spec = importlib.util.find_spec("tensorrt_libs")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / soname
        if path.is_file():
            return path
    return None


def load_library(soname: str) -> str | None:
    """Load `soname` for the whole process (a provider that links it then finds it loaded); None when done, else
    why not. The pip TensorRT wheel's copy is taken when the library paths have none."""
    try:
        ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError as e:
        first = str(e)
    wheel = tensorrt_wheel_library(soname)
    if wheel is None:
        return first
    try:
        ctypes.CDLL(str(wheel), mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError as e:
        return str(e)


def ort_tensorrt_libraries() -> str | None:
    """Make the TensorRT 10 libraries onnxruntime's TensorRT provider links loadable; None when they are, else why
    not (the provider then fails to load and onnxruntime falls back to CUDA)."""
    for soname in ORT_TENSORRT_LIBRARIES:
        why = load_library(soname)
        if why is not None:
            return f"{soname} cannot be loaded ({why})"
    return None


def ort_provider_library(module, provider: str) -> str | None:
    """Whether the shared library of onnxruntime `module`'s `provider` ("cuda", "tensorrt") loads here: None when
    it does, else why not, usually the first library it links that is missing (`libcublasLt.so.13: cannot open
    shared object file`). This is the load onnxruntime itself does when a session asks for the provider; nothing
    starts on the GPU."""
    capi = Path(module.__file__).parent / "capi"
    lib = capi / f"libonnxruntime_providers_{provider}.so"
    if not lib.is_file():
        return f"this onnxruntime has no {lib.name} (a CPU build)"
    try:  # the provider resolves onnxruntime's bridge symbols from the shared provider library, loaded first
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return str(e).replace(str(lib) + ": ", f"{lib.name}: ")
    return None
