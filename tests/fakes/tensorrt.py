"""A stand-in `tensorrt` module, checked against the recorded TensorRT API of one version (10.3 or 11.4).

Runtime side: the "engine" reads uint8 NHWC tiles from the pretend device memory (tests/fakes/gpu.py) and writes
`fakes.runtime.pixel_rule`'s outputs, so results can be compared exactly; an enqueue on a capturing stream is
recorded into the capture instead of run. Builder side: the build "succeeds" with the given plan bytes and extends
the timing cache it was given. Every call the real API can fail returns what the real one returns on failure
(False, -1, None) or raises what it raises (TypeError for a nullptr from a factory) when named in `gpu.fail`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .api import Api, Fake, FakeModule, api_keys, bind, enum
from .gpu import Gpu, capturing

TENSORRT_KEYS = api_keys("tensorrt")
VERSIONS = {key: key.split("-", 1)[1] + ".0" for key in TENSORRT_KEYS}  # "tensorrt-10.3" -> "10.3.0"

OUTPUT_DTYPES = {"labels": "UINT8", "confidence": "HALF", "probs": "HALF"}
NUMPY = {"UINT8": np.uint8, "HALF": np.float16, "FLOAT": np.float32, "INT32": np.int32, "INT8": np.int8}


def nullptr(what: str) -> TypeError:
    """What pybind11 raises when a TensorRT factory (Builder, Runtime, ...) returns nullptr (e.g. CUDA unusable)."""
    return TypeError(f"pybind11::init(): factory function returned nullptr ({what})")


def tensorrt_module(
    api_key: str = TENSORRT_KEYS[0],
    gpu: Gpu | None = None,
    *,
    tile: int = 32,
    num_classes: int = 4,
    profile: tuple[int, int, int] = (1, 2, 4),
    plan: bytes = b"\x00plan",
    version: str | None = None,
) -> FakeModule:
    from fakes.runtime import pixel_rule

    api = Api(api_key)
    gpu = gpu or Gpu()
    mod = FakeModule(api, "tensorrt")
    mod.__version__ = version or VERSIONS[api_key]
    DataType = enum(api, "DataType")
    TensorIOMode = enum(api, "TensorIOMode")
    Severity = enum(api, "ILogger.Severity")
    T, N = tile, num_classes

    class Dims(Fake, real="Dims"):
        def __init__(self, shape):
            self._shape = tuple(int(d) for d in shape)

        def __len__(self):
            return len(self._shape)

        def __getitem__(self, arg0):
            return self._shape[arg0]

    Dims = bind(api, Dims)

    class Logger(Fake, real="Logger"):
        def __init__(self, min_severity=Severity.WARNING):
            self._severity = min_severity

    Logger = bind(api, Logger)
    for key in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
        type.__setattr__(Logger, key, getattr(Severity, key))

    names = ["images", "labels", "confidence", "probs"]

    class ExecutionContext(Fake, real="IExecutionContext"):
        def _setup(self):
            self._address: dict[str, int] = {}
            self._batch = None

        def set_input_shape(self, name, shape):
            if gpu.failing("set_input_shape") or not profile[0] <= shape[0] <= profile[2]:
                return False
            self._batch = shape[0]
            return True

        def get_tensor_shape(self, name):
            b = self._batch if self._batch is not None else -1
            return Dims((b, N, T, T) if name == "probs" else (b, T, T, 3) if name == "images" else (b, T, T))

        def set_tensor_address(self, name, memory):
            if gpu.failing("set_tensor_address"):
                return False
            self._address[name] = memory
            return True

        def _run(self, b):
            gpu.counts["compute"] += 1
            x = gpu.memory[self._address["images"]][: b * T * T * 3].reshape(b, T, T, 3)
            res = pixel_rule(x, N)
            for name in names[1:]:
                v = np.ascontiguousarray(res[name].astype(NUMPY[OUTPUT_DTYPES[name]])).view(np.uint8).ravel()
                gpu.memory[self._address[name]][: v.size] = v

        def execute_async_v3(self, stream_handle):
            if gpu.failing("execute_async_v3"):
                return False
            b = self._batch
            cap = capturing(gpu, stream_handle)
            if cap is not None:
                cap["ops"].append(lambda: self._run(b))
            else:
                gpu.counts["enqueue"] += 1
                self._run(b)
            return True

    ExecutionContext = bind(api, ExecutionContext)

    class Engine(Fake, real="ICudaEngine"):
        num_io_tensors = 4

        def get_tensor_name(self, index):
            return names[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return Dims([-1, T, T, 3] if name == "images" else [-1, N, T, T] if name == "probs" else [-1, T, T])

        def get_tensor_dtype(self, name):
            return getattr(DataType, "UINT8" if name == "images" else OUTPUT_DTYPES[name])

        def get_tensor_profile_shape(self, name, profile_index):
            return [Dims((b, T, T, 3)) for b in profile]

        def create_execution_context(self, strategy=None):
            if gpu.failing("create_execution_context"):
                return None
            return ExecutionContext._make()

    Engine = bind(api, Engine)

    class Runtime(Fake, real="Runtime"):
        def __init__(self, logger):
            if gpu.failing("Runtime"):
                raise nullptr("createInferRuntime")
            self._engine_host_code_allowed = False

        @property
        def engine_host_code_allowed(self):
            return self._engine_host_code_allowed

        @engine_host_code_allowed.setter
        def engine_host_code_allowed(self, value):
            self._engine_host_code_allowed = value

        def deserialize_cuda_engine(self, serialized_engine):
            if gpu.failing("deserialize_cuda_engine"):
                return None
            return Engine._make()

    def nptype(trt_type):
        return NUMPY[trt_type.name]

    mod.Logger, mod.Runtime, mod.DataType, mod.TensorIOMode = Logger, bind(api, Runtime), DataType, TensorIOMode
    mod.nptype = nptype
    _builder_side(mod, api, gpu, plan)
    return mod


def _builder_side(mod: FakeModule, api: Api, gpu: Gpu, plan: bytes) -> None:
    """Builder, OnnxParser, builder config, timing cache and the flag enums `export.tensorrt_build` uses."""

    class HostMemory(bytes, Fake, real="IHostMemory"):  # bytes: the real one has the buffer protocol
        @classmethod
        def _make(cls, data: bytes):
            return bytes.__new__(cls, data)

        @property
        def nbytes(self):
            return len(self)

    HostMemory = bind(api, HostMemory)

    class TimingCache(Fake, real="ITimingCache"):
        def _setup(self, data: bytes):
            self._data = bytes(data)

        def serialize(self):
            return HostMemory._make(self._data + b"+timing")

    TimingCache = bind(api, TimingCache)

    class Profile(Fake, real="IOptimizationProfile"):
        def _setup(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):
            self._shapes[input] = (min, opt, max)

    Profile = bind(api, Profile)

    class Config(Fake, real="IBuilderConfig"):
        def _setup(self):
            self._cache, self._flags, self._profiles, self._level = None, set(), [], 3

        def set_memory_pool_limit(self, pool, pool_size):
            pass

        def set_flag(self, flag):
            self._flags.add(flag)

        @property
        def builder_optimization_level(self):
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, value):
            self._level = value

        def add_optimization_profile(self, profile):
            if gpu.failing("add_optimization_profile"):
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            if gpu.failing("create_timing_cache"):
                return None
            return TimingCache._make(bytes(memoryview(serialized_timing_cache)))

        def set_timing_cache(self, cache, ignore_mismatch):
            if gpu.failing("set_timing_cache"):
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    Config = bind(api, Config)

    class Network(Fake, real="INetworkDefinition"):
        pass

    Network = bind(api, Network)

    class Builder(Fake, real="Builder"):
        def __init__(self, logger):
            if gpu.failing("Builder"):
                raise nullptr("createInferBuilder")

        def create_network(self, flags=0):
            if gpu.failing("create_network"):
                return None
            return Network._make()

        def create_builder_config(self):
            return Config._make()

        def create_optimization_profile(self):
            return Profile._make()

        def build_serialized_network(self, network, config):
            if gpu.failing("build_serialized_network"):
                return None
            return HostMemory._make(plan)

    class OnnxParser(Fake, real="OnnxParser"):
        def __init__(self, network, logger):
            self._errors: list[str] = []

        @property
        def num_errors(self):
            return len(self._errors)

        def parse_from_file(self, model):
            if gpu.failing("parse_from_file") or not Path(model).is_file():
                self._errors.append(f"{model}: cannot parse")
                return False
            return True

        def get_error(self, index):
            return self._errors[index]

    mod.Builder, mod.OnnxParser = bind(api, Builder), bind(api, OnnxParser)
    mod.NetworkDefinitionCreationFlag = enum(api, "NetworkDefinitionCreationFlag")
    mod.MemoryPoolType = enum(api, "MemoryPoolType")
    mod.BuilderFlag = enum(api, "BuilderFlag")


def install(monkeypatch, api_key: str = TENSORRT_KEYS[0], gpu: Gpu | None = None, **engine) -> Gpu:
    """Make co2s.runtime.backends.tensorrt use the stand-in tensorrt, pycuda.driver and cuda-python runtime."""
    from co2s.runtime.backends import tensorrt as backend

    from .gpu import cudart_module, pycuda_module

    gpu = gpu or Gpu()
    trt, cuda, cudart = tensorrt_module(api_key, gpu, **engine), pycuda_module(gpu), cudart_module(gpu)
    monkeypatch.setattr(backend, "import_tensorrt", lambda: (trt, cuda))
    monkeypatch.setattr(backend, "import_cudart", lambda: cudart)
    monkeypatch.setattr(backend, "pop_driver_context", gpu.pop_driver_context)
    gpu.modules = {"tensorrt": trt, "pycuda.driver": cuda, "cudart": cudart}
    return gpu
