"""A pretend GPU for the native TensorRT path: pycuda.driver and cuda-python's runtime, checked against the recorded
API (tests/data/gpu_api.json).

`Gpu` holds the state both modules share: device memory (numpy buffers keyed by address), streams by handle (with
what is being captured on them), CUDA's per-thread context stack and pycuda's own, the primary context's retain
count, counters (ordinary enqueues, graph launches, captures), and failures to inject (`gpu.fail.add("mem_alloc")`).
pycuda's context rules follow its C++ source: `Context.pop()` pops CUDA's stack only while pycuda's is not empty,
and `detach()` of a context that is not current pushes it, releases it, and leaves it current.
"""

from __future__ import annotations

import threading
import types

import numpy as np

from .api import Api, Fake, FakeModule, api_keys, bind, enum


class Gpu:
    def __init__(self, *, name: str = "Orin", cc: tuple[int, int] = (8, 7), count: int = 1):
        self.name, self.cc, self.count = name, cc, count
        self.memory: dict[int, np.ndarray] = {}
        self.streams: dict[int, object] = {}
        self.next_address = 1 << 20
        self.next_handle = 1
        self.primary_retains = 0
        # enqueue: ordinary TensorRT enqueues run; compute: batches computed (enqueued or replayed from a graph)
        self.counts = {"enqueue": 0, "compute": 0, "graph_launch": 0, "capture": 0, "instantiate": 0}
        self.fail: set[str] = set()  # names of calls that fail next time (each once)
        self._local = threading.local()
        self.lock = threading.Lock()
        self.modules: dict = {}  # the stand-in modules built on this GPU (fakes.tensorrt.install)

    def failing(self, what: str) -> bool:
        with self.lock:
            if what in self.fail:
                self.fail.discard(what)
                return True
        return False

    def handle(self) -> int:
        """A new opaque handle (stream, graph): not device memory."""
        with self.lock:
            self.next_handle += 1
            return self.next_handle

    def allocate(self, nbytes: int) -> int:
        with self.lock:
            addr = self.next_address
            self.next_address += nbytes + 4096
            self.memory[addr] = np.zeros(nbytes, np.uint8)
        return addr

    # CUDA's context stack and pycuda's, per thread
    @property
    def driver_stack(self) -> list:
        if not hasattr(self._local, "driver"):
            self._local.driver, self._local.pycuda = [], []
        return self._local.driver

    @property
    def pycuda_stack(self) -> list:
        self.driver_stack  # noqa: B018 - creates both
        return self._local.pycuda

    def pop_driver_context(self) -> None:
        """cuCtxPopCurrent (what the backend calls through the driver library after detaching)."""
        if not self.driver_stack:
            raise RuntimeError("cuCtxPopCurrent: no current context")
        self.driver_stack.pop()


# --------------------------------------------------------------------------------------------- pycuda.driver
def pycuda_module(gpu: Gpu, api_key: str | None = None) -> FakeModule:
    api = Api(api_key or api_keys("pycuda")[-1])
    mod = FakeModule(api, "pycuda.driver")

    class Error(Exception):
        pass

    class CudaMemoryError(Error):
        pass

    class LogicError(Error):
        pass

    class Context(Fake, real="Context"):
        def _setup(self, primary: bool):
            self._valid, self._primary = True, primary

        def push(self):
            if gpu.pycuda_stack:
                gpu.driver_stack.pop()
            gpu.driver_stack.append(self)
            gpu.pycuda_stack.append(self)

        @staticmethod
        def pop():
            if gpu.pycuda_stack:
                gpu.driver_stack.pop()
            if not gpu.pycuda_stack:
                raise LogicError("context::pop failed: invalid context - cannot pop non-current context")
            gpu.pycuda_stack.pop()
            while gpu.pycuda_stack and not gpu.pycuda_stack[-1]._valid:
                gpu.pycuda_stack.pop()
            if gpu.pycuda_stack:
                gpu.driver_stack.append(gpu.pycuda_stack[-1])

        def detach(self):
            if not self._valid:
                raise LogicError("context::detach failed: invalid context - cannot detach from invalid context")
            active = bool(gpu.pycuda_stack) and gpu.pycuda_stack[-1] is self
            if not active:
                gpu.driver_stack.append(self)  # pushed to release it, and left there ("pop is implicit")
            gpu.primary_retains -= 1
            self._valid = False
            if active:
                while gpu.pycuda_stack and (gpu.pycuda_stack[-1] is self or not gpu.pycuda_stack[-1]._valid):
                    gpu.pycuda_stack.pop()
                if gpu.pycuda_stack:
                    gpu.driver_stack.append(gpu.pycuda_stack[-1])

    Context = bind(api, Context)

    class Device(Fake, real="Device"):
        def __init__(self, arg1):
            if not 0 <= arg1 < gpu.count:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count():
            return gpu.count

        def name(self):
            return gpu.name

        def compute_capability(self):
            return gpu.cc

        def retain_primary_context(self):
            if gpu.failing("retain_primary_context"):
                raise Error("cuDevicePrimaryCtxRetain failed: out of memory")
            gpu.primary_retains += 1
            return Context._make(True)

    class DeviceAllocation(Fake, real="DeviceAllocation"):
        def _setup(self, nbytes):
            self._address = gpu.allocate(nbytes)

        def __int__(self):
            return self._address

        def __index__(self):
            return self._address

        def free(self):
            gpu.memory.pop(self._address, None)

    DeviceAllocation = bind(api, DeviceAllocation)

    class Stream(Fake, real="Stream"):
        def __init__(self, flags=0):
            self._flags = flags
            self._handle = gpu.handle()
            self._capture = None
            gpu.streams[self._handle] = self

        @property
        def handle(self):
            return self._handle

        def synchronize(self):
            pass

    class Event(Fake, real="Event"):
        def __init__(self, flags=0):
            pass

        def record(self, stream=None):
            return self

        def synchronize(self):
            return self

        def time_since(self, arg2):
            return 0.5

    def _current(what):
        if not gpu.driver_stack:
            raise LogicError(f"{what} failed: invalid device context - no currently active context?")

    def init(flags=0):
        if gpu.failing("init"):
            raise Error("cuInit failed: no CUDA-capable device is detected")

    def mem_alloc(arg1):
        _current("cuMemAlloc")
        if gpu.failing("mem_alloc"):
            raise CudaMemoryError("cuMemAlloc failed: out of memory")
        return DeviceAllocation._make(arg1)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        _current("cuMemHostAlloc")
        if gpu.failing("pagelocked_empty"):
            raise CudaMemoryError("cuMemHostAlloc failed: out of memory")
        return np.zeros(shape, dtype, order=order)

    def memcpy_htod_async(dest, src, stream=None):
        _current("cuMemcpyHtoDAsync")
        gpu.memory[int(dest)][: src.nbytes] = np.ascontiguousarray(src).view(np.uint8).ravel()

    def memcpy_dtoh_async(dest, src, stream=None):
        _current("cuMemcpyDtoHAsync")
        dest.view(np.uint8).reshape(-1)[:] = gpu.memory[int(src)][: dest.nbytes]

    for name, value in {
        "Error": Error,
        "MemoryError": CudaMemoryError,
        "LogicError": LogicError,
        "Context": Context,
        "Device": bind(api, Device),
        "DeviceAllocation": DeviceAllocation,
        "Stream": bind(api, Stream),
        "Event": bind(api, Event),
        "init": init,
        "mem_alloc": mem_alloc,
        "pagelocked_empty": pagelocked_empty,
        "memcpy_htod_async": memcpy_htod_async,
        "memcpy_dtoh_async": memcpy_dtoh_async,
    }.items():
        setattr(mod, name, value)
    return mod


# --------------------------------------------------------------------------------------------- cuda-python runtime
def cudart_module(gpu: Gpu, api_key: str | None = None) -> FakeModule:
    """cuda.bindings.runtime: stream capture records the TensorRT enqueues made on a capturing stream; a launched
    graph replays them. Every call returns a tuple, the error code first, like the real bindings."""
    api = Api(api_key or api_keys("cudart")[-1])
    mod = FakeModule(api, "cuda.bindings.runtime")
    err = enum(api, "cudaError_t")
    mode = enum(api, "cudaStreamCaptureMode")
    ok = err.cudaSuccess

    class Handle(Fake):
        def __init__(self, init_value=0):
            self._value = int(init_value)

        def __int__(self):
            return self._value

        def __index__(self):
            return self._value

    class Graph(Handle, real="cudaGraph_t"):
        pass

    class GraphExec(Handle, real="cudaGraphExec_t"):
        pass

    Graph, GraphExec = bind(api, Graph), bind(api, GraphExec)
    graphs: dict[int, list] = {}
    execs: dict[int, list] = {}

    def _stream(stream):
        return gpu.streams[int(stream)]

    def cudaStreamBeginCapture(stream, mode):
        s = _stream(stream)
        if gpu.failing("cudaStreamBeginCapture"):
            return (err.cudaErrorStreamCaptureUnsupported,)
        if s._capture is not None:
            return (err.cudaErrorIllegalState,)
        s._capture = {"ops": [], "mode": mode, "invalid": False}
        return (ok,)

    def cudaStreamEndCapture(stream):
        s = _stream(stream)
        cap, s._capture = s._capture, None
        if cap is None:
            return (err.cudaErrorIllegalState, None)
        gpu.counts["capture"] += 1
        if cap["invalid"] or gpu.failing("cudaStreamEndCapture"):
            return (err.cudaErrorStreamCaptureInvalidated, None)
        g = Graph(gpu.handle())
        graphs[int(g)] = cap["ops"]
        return (ok, g)

    def cudaGraphInstantiate(graph, flags):
        if gpu.failing("cudaGraphInstantiate"):
            return (err.cudaErrorInvalidValue, None)
        e = GraphExec(gpu.handle())
        execs[int(e)] = list(graphs[int(graph)])
        gpu.counts["instantiate"] += 1
        return (ok, e)

    def cudaGraphDestroy(graph):
        graphs.pop(int(graph))
        return (ok,)

    def cudaGraphExecDestroy(graphExec):
        execs.pop(int(graphExec))
        return (ok,)

    def cudaGraphLaunch(graphExec, stream):
        if gpu.failing("cudaGraphLaunch"):
            return (err.cudaErrorLaunchFailure,)
        gpu.counts["graph_launch"] += 1
        for op in execs[int(graphExec)]:
            op()
        return (ok,)

    def cudaGetErrorName(error):
        return (ok, error.name.encode())

    mod.cudaError_t = err
    mod.cudaStreamCaptureMode = mode
    for f in (
        cudaStreamBeginCapture,
        cudaStreamEndCapture,
        cudaGraphInstantiate,
        cudaGraphDestroy,
        cudaGraphExecDestroy,
        cudaGraphLaunch,
        cudaGetErrorName,
    ):
        setattr(mod, f.__name__, f)
    types.ModuleType.__setattr__(mod, "live_graphs", (graphs, execs))  # for tests: what is still allocated
    return mod


def capturing(gpu: Gpu, stream_handle: int):
    """The capture in progress on a stream (None when it is not capturing): where an enqueue goes instead of running."""
    s = gpu.streams.get(int(stream_handle))
    return None if s is None else s._capture
