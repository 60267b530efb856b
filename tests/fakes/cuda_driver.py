"""A stand-in for the CUDA driver library (libcuda.so.1 through ctypes), for runtime/backends/gpu_probe.py.

Each function takes the C arguments cuda.h declares and returns a CUresult (0 = CUDA_SUCCESS), as a ctypes call
does: `cuInit(unsigned int)`, `cuDriverGetVersion(int *)`, `cuDeviceGetCount(int *)`,
`cuGetErrorName(CUresult, const char **)`. An output argument must be `ctypes.byref` of the C type the header names
(anything else would be memory corruption on the real library, so it fails here), and a function the fake lacks
is an AttributeError, as on the real CDLL.
"""

from __future__ import annotations

import ctypes

from .api import FakeApiError

CUDA_SUCCESS = 0
ERROR_NAMES = {  # cuda.h CUresult
    0: b"CUDA_SUCCESS",
    3: b"CUDA_ERROR_NOT_INITIALIZED",
    35: b"CUDA_ERROR_INSUFFICIENT_DRIVER",
    100: b"CUDA_ERROR_NO_DEVICE",
    999: b"CUDA_ERROR_UNKNOWN",
}
_BYREF = type(ctypes.byref(ctypes.c_int()))


def _out(arg, ctype, call: str):
    if type(arg) is not _BYREF or not isinstance(arg._obj, ctype):
        raise FakeApiError(f"libcuda {call}: expects ctypes.byref({ctype.__name__}()), got {arg!r}")
    return arg._obj


class Driver:
    """`count` devices; `init_error` is what cuInit returns (e.g. 100 for CUDA_ERROR_NO_DEVICE)."""

    def __init__(self, count: int = 1, *, init_error: int = CUDA_SUCCESS, version: int = 13000):
        self.count, self.init_error, self.version = count, init_error, version
        self.initialised = False

    def cuInit(self, flags):
        if not isinstance(flags, int) or flags != 0:
            raise FakeApiError(f"libcuda cuInit: Flags must be 0, got {flags!r}")
        self.initialised = self.init_error == CUDA_SUCCESS
        return self.init_error

    def cuDriverGetVersion(self, driverVersion):
        _out(driverVersion, ctypes.c_int, "cuDriverGetVersion").value = self.version
        return CUDA_SUCCESS

    def cuDeviceGetCount(self, count):
        out = _out(count, ctypes.c_int, "cuDeviceGetCount")
        if not self.initialised:
            return 3  # CUDA_ERROR_NOT_INITIALIZED
        out.value = self.count
        return CUDA_SUCCESS

    def cuGetErrorName(self, error, pStr):
        out = _out(pStr, ctypes.c_char_p, "cuGetErrorName")
        if error not in ERROR_NAMES:
            return 1  # CUDA_ERROR_INVALID_VALUE
        out.value = ERROR_NAMES[error]
        return CUDA_SUCCESS


def install(monkeypatch, driver: Driver | None, *, nodes: tuple[str, ...] = ()):
    """Make gpu_probe see `driver` (None: no NVIDIA driver) and exactly the device nodes `nodes`."""
    from co2s.runtime.backends import gpu_probe

    def load_driver():
        if driver is None:
            raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")
        return driver

    monkeypatch.delenv("CO2S_FORCE_NO_GPU", raising=False)
    monkeypatch.setattr(gpu_probe, "load_driver", load_driver)
    monkeypatch.setattr(gpu_probe, "DEVICE_NODES", nodes)
    gpu_probe.cuda_devices.cache_clear()
