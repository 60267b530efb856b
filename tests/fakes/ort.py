"""A stand-in onnxruntime-gpu for the GPU-provider paths of runtime/backends/ort.py, checked against the recorded
onnxruntime API (tests/data/gpu_api.json).

It behaves as onnxruntime-gpu does where a provider's libraries are missing (the messages are the ones
microsoft/onnxruntime's issue threads show, e.g. #18597 and #21684):

* the build lists TensorrtExecutionProvider and CUDAExecutionProvider whatever the machine has;
* a TensorRT provider whose TensorRT libraries cannot be loaded raises RuntimeError inside InferenceSession, whose
  Python code then prints `EP Error ... when using [...]` and `Falling back to [...] and retrying.` on stdout and
  builds the session again on the fallback providers (CUDA and CPU when both were asked for, else the CPU);
* a CUDA provider whose CUDA/cuDNN libraries cannot be loaded is logged on stderr ("Failed to create
  CUDAExecutionProvider") and left out: the session runs on the CPU, without an exception;
* `start_error` is raised as onnxruntime raises a provider that loads but cannot start (RuntimeException, which is
  not a RuntimeError, so the Python fallback does not catch it).

A session runs on the real onnxruntime's CPU provider underneath, so a fallback computes real results.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import onnxruntime as real_ort

from .api import Api, Fake, FakeModule, api_keys, bind, enum

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
TRT_LOAD_ERROR = (
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1539 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: cannot open shared object file: "
    "No such file or directory\n"
)
CUDA_LOAD_LOG = (
    "[E:onnxruntime:Default, provider_bridge_ort.cc:2036 TryGetProviderInfo_CUDA] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1695 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: "
    "No such file or directory\n"
)
NO_DEVICE_ERROR = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: "
    "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 std::conditional_t<THRW, void, "
    "onnxruntime::common::Status> onnxruntime::CudaCall(...) CUDA failure 100: no CUDA-capable device is detected ; "
    "GPU=0 ; expr=cudaSetDevice(info_.device_id);"
)


class RuntimeException(Exception):
    """onnxruntime.capi.onnxruntime_pybind11_state.RuntimeException: an Exception, not a RuntimeError."""


@dataclass
class Machine:
    """What the fake onnxruntime finds: which provider libraries load, what a provider raises when it starts."""

    tensorrt_libs: bool = False
    cuda_libs: bool = False
    start_error: Exception | None = None
    providers: tuple[str, ...] = (TRT, CUDA, CPU)  # what the build lists
    sessions: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (asked for, got) per session
    preloads: int = 0


def onnxruntime_module(machine: Machine, api_key: str | None = None) -> FakeModule:
    api = Api(api_key or api_keys("onnxruntime")[-1])
    mod = FakeModule(api, "onnxruntime")
    level = enum(api, "GraphOptimizationLevel")

    class SessionOptions(Fake, real="SessionOptions"):
        def __init__(self):
            self._set: dict = {}

        def _real_options(self):
            so = real_ort.SessionOptions()
            for k, v in self._set.items():
                setattr(so, k, getattr(real_ort.GraphOptimizationLevel, v.name) if k.startswith("graph") else v)
            return so

    for prop in ("graph_optimization_level", "log_severity_level", "intra_op_num_threads", "optimized_model_filepath"):
        setattr(
            SessionOptions,
            prop,
            property(lambda self, p=prop: self._set[p], lambda self, v, p=prop: self._set.__setitem__(p, v)),
        )
    SessionOptions = bind(api, SessionOptions)

    class NodeArg(Fake, real="NodeArg"):
        def _setup(self, real):
            self._node = real

        @property
        def name(self):
            return self._node.name

        @property
        def shape(self):
            return list(self._node.shape)

        @property
        def type(self):
            return self._node.type

    NodeArg = bind(api, NodeArg)

    class InferenceSession(Fake, real="InferenceSession"):
        def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
            asked = [p[0] if isinstance(p, tuple) else p for p in providers or []]
            fallback = [CUDA, CPU] if CUDA in asked and TRT in asked else [CPU]
            try:
                self._providers = self._create(asked)
            except RuntimeError as e:  # onnxruntime's own Python fallback (InferenceSession.__init__)
                print("*************** EP Error ***************")
                print(f"EP Error {e} when using {providers}")
                print(f"Falling back to {fallback} and retrying.")
                print("****************************************")
                self._providers = self._create(fallback)
            so = sess_options._real_options() if sess_options is not None else None
            self._cpu = real_ort.InferenceSession(path_or_bytes, so, providers=[CPU])
            machine.sessions.append((asked, list(self._providers)))

        def _create(self, asked: list[str]) -> list[str]:
            loaded = []
            for name in asked:
                if name == TRT and not machine.tensorrt_libs:
                    raise RuntimeError(TRT_LOAD_ERROR)
                if name == CUDA and not machine.cuda_libs:
                    sys.stderr.write(CUDA_LOAD_LOG)
                    continue
                if name in (TRT, CUDA) and machine.start_error is not None:
                    raise machine.start_error
                loaded.append(name)
            return loaded

        def get_providers(self):
            return list(self._providers)

        def get_inputs(self):
            return [NodeArg._make(i) for i in self._cpu.get_inputs()]

        def get_outputs(self):
            return [NodeArg._make(o) for o in self._cpu.get_outputs()]

        def run(self, output_names, input_feed, run_options=None):
            return self._cpu.run(output_names, input_feed)

    def get_available_providers():
        return list(machine.providers)

    def preload_dlls(cuda=True, cudnn=True, msvc=True, directory=None):
        machine.preloads += 1
        if not machine.cuda_libs:  # what onnxruntime prints when the nvidia-* wheels are not installed
            print("Failed to load libcudart.so.13: libcudart.so.13: cannot open shared object file: No such file")
            print("Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.")

    mod.__version__ = real_ort.__version__
    mod.GraphOptimizationLevel = level
    mod.SessionOptions = SessionOptions
    mod.InferenceSession = bind(api, InferenceSession)
    mod.get_available_providers = get_available_providers
    mod.preload_dlls = preload_dlls
    return mod


def install(monkeypatch, machine: Machine) -> FakeModule:
    """Make `import onnxruntime` (as runtime/backends/ort.py does it) give the stand-in."""
    mod = onnxruntime_module(machine)
    monkeypatch.setitem(sys.modules, "onnxruntime", mod)
    return mod
