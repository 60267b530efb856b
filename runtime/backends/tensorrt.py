"""Native TensorRT backend (TensorRT 10/11 Python API + pycuda), for Jetson and datacenter GPUs.

Per slot (two by default, for double buffering): an execution context, a CUDA stream, pinned host buffers and
device buffers sized for the largest batch, and four CUDA events. `submit` stages the tiles into pinned memory and
queues copy-in, compute and copy-out on the slot's stream without waiting, so the pipeline can queue the next
batch on the other slot while this one runs; `result()` waits on the slot's last event and reads the GPU-side
stage times from the events. Optional CUDA-graph capture of the enqueue removes per-layer launch overhead
(useful on Jetson, where the CPU is slow): pycuda has no graph API, so capture goes through cuda-python's runtime
bindings on the slot's stream handle (`cudaStreamBeginCapture` in thread-local mode, so other threads' CUDA calls
neither break nor are broken by it; the streams are non-blocking, so work on the legacy default stream cannot
invalidate a capture). The first batch of each size on a slot is an ordinary enqueue (TensorRT wants one after a
shape change before capture) and is that batch's compute; the capture that follows only records, and later batches
of that size launch the graph. No batch is computed twice.

Every failure the GPU libraries report (a False or -1 return, a nullptr that pybind11 turns into TypeError,
pycuda's errors) becomes BackendUnavailable while the backend is being set up, so `--backend auto` moves on to the
next backend, and the CUDA context is released on the way out.

Thread safety: an execution context, its stream, pinned buffers and events serve one batch at a time, so each
slot has a lock, held from "wait for the slot's previous batch" through staging and enqueue, and again while a
result is synchronised and copied out of the pinned buffers; a small backend lock hands out slots round-robin.
One backend can therefore be shared by several threads (their batches interleave over the slots; a thread that
finds its slot busy finishes the earlier batch into that batch's own handle first). Each thread makes the
backend's CUDA context current around its own calls (`active()`), as the CUDA driver requires.

Before anything is deserialised the manifest's record of the engine (TensorRT version, GPU, compute capability)
is compared with this machine, because a mismatched plan either fails to load or, worse, loads and misbehaves.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable

import numpy as np

from co2s.bundle import Artefact, BatchSpec, Bundle, verify_artefact
from co2s.errors import Co2SInputError

from ..profiler import StageProfiler
from .base import Backend, BackendInfo, Pending
from .ort import BackendUnavailable

log = logging.getLogger("co2s.runtime")


def import_tensorrt():
    """(tensorrt, pycuda.driver) or BackendUnavailable saying what to install."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise BackendUnavailable(
            "tensorrt: the TensorRT Python package is not installed (pip install "
            "'co2s[gpu]'; on Jetson it comes with JetPack as python3-libnvinfer)"
        ) from None
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]
    except ImportError:
        raise BackendUnavailable("tensorrt: pycuda is not installed (pip install pycuda)") from None
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise BackendUnavailable("tensorrt: no CUDA device found")
    except cuda.Error as e:
        raise BackendUnavailable(f"tensorrt: CUDA driver not usable ({e})") from None
    return trt, cuda


def import_cudart():
    """cuda-python's runtime bindings (for CUDA graphs) or BackendUnavailable saying what to install."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # older cuda-python
        except ImportError:
            raise BackendUnavailable(
                "tensorrt: --cuda-graph needs cuda-python (pip install cuda-python; on JetPack 6 "
                "pip install 'cuda-python==12.6.*'), or run without --cuda-graph"
            ) from None
    return cudart


def pop_driver_context() -> None:
    """Take the current context off CUDA's own per-thread stack. pycuda's `Context.detach()` of a retained primary
    context pushes it, releases it and leaves it current there (its C++ says "pop is implicit in detach", which
    holds for ordinary contexts only), and pycuda has no call that pops CUDA's stack alone."""
    import ctypes

    ctx = ctypes.c_void_p()
    ctypes.CDLL("libcuda.so.1").cuCtxPopCurrent_v2(ctypes.byref(ctx))


# cuda.h CUstream_flags: CU_STREAM_NON_BLOCKING (pycuda takes the raw flags and names no constant for them)
STREAM_NON_BLOCKING = 1


class CudaCallFailed(RuntimeError):
    """A cuda-python call returned an error code."""


def cuda_check(cudart, result: tuple, call: str):
    """The outputs of a cuda-python call (which returns `(error, *outputs)`), or CudaCallFailed naming the error."""
    err, *out = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise CudaCallFailed(f"{call} failed: {name.decode() if isinstance(name, bytes) else name}")
    return out[0] if len(out) == 1 else tuple(out)


def parse_version(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:3])


def engine_mismatch(art: Artefact, trt_version: str, cc: tuple[int, int], device: str) -> str | None:
    """Why this engine cannot run here, or None. Plans are tied to the exact TensorRT version (unless built
    version-compatible: same or newer runtime, next major allowed) and to the GPU architecture (unless built
    with a hardware-compatibility level)."""
    here, built = parse_version(trt_version), parse_version(art.trt_version)
    why = []
    if built:
        if art.version_compatible:
            if here < built or here[0] > built[0] + 1:
                why.append(f"built version-compatible with TensorRT {art.trt_version}, this runtime is {trt_version}")
        elif here[:3] != built[:3]:
            why.append(f"built with TensorRT {art.trt_version}, this runtime is {trt_version}")
    hw = (art.hardware_compatibility or "").lower()
    if art.compute_capability:
        want = tuple(art.compute_capability)
        if "ampere_plus" in hw or "ampere-plus" in hw:
            if cc < (8, 0):
                why.append(f"built for Ampere and newer (sm_80+), this GPU is {device} (sm_{cc[0]}{cc[1]})")
        elif want != cc:
            why.append(
                f"built for {art.device_name or 'a GPU'} (sm_{want[0]}{want[1]}), this GPU is {device} "
                f"(sm_{cc[0]}{cc[1]})"
            )
    return "; ".join(why) or None


def rebuild_hint(bundle: Bundle, precision: str) -> str:
    return (
        f"rebuild the engine on this machine: co2s-export --from-bundle {bundle.root} --engine {precision} "
        f"(or run the ONNX model instead: --backend ort-trt or ort-cuda)"
    )


class _Slot:
    """One in-flight batch worth of context, stream, buffers and events."""

    def __init__(self, trt, cuda, engine, input_name: str, outputs: list[str], tile: int, bmax: int):
        self.d_in, self.d_out, self.graphs = None, {}, {}  # what free() releases, even if set-up stops halfway
        try:
            self._allocate(trt, cuda, engine, input_name, outputs, tile, bmax)
        except BaseException:
            self.free(None)
            raise
        self.pending: _TrtPending | None = None
        # guards everything above between threads: re-entrant because submit, holding it, may finish the slot's
        # previous batch (`pending.result()` takes it too)
        self.lock = threading.RLock()
        self.closed = False

    def _allocate(self, trt, cuda, engine, input_name: str, outputs: list[str], tile: int, bmax: int) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("tensorrt: TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.Stream(STREAM_NON_BLOCKING)
        self.input_name = input_name
        self.h_in = cuda.pagelocked_empty((bmax, tile, tile, 3), np.uint8)
        self.d_in = cuda.mem_alloc(self.h_in.nbytes)
        if not self.context.set_input_shape(input_name, (bmax, tile, tile, 3)):
            raise BackendUnavailable(
                f"tensorrt: the engine refuses input shape [{bmax}, {tile}, {tile}, 3] (the bundle's largest "
                "batch); rebuild the engine from this bundle"
            )
        self.h_out: dict[str, np.ndarray] = {}
        self.bind(input_name, self.d_in)
        for name in outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            self.h_out[name] = cuda.pagelocked_empty(shape, dtype)
            self.d_out[name] = cuda.mem_alloc(max(1, self.h_out[name].nbytes))
            self.bind(name, self.d_out[name])
        self.bound_batch = bmax
        self.events = [cuda.Event() for _ in range(4)]

    def bind(self, name: str, buffer) -> None:
        if not self.context.set_tensor_address(name, int(buffer)):
            raise BackendUnavailable(f"tensorrt: TensorRT refused the device buffer of tensor {name!r}")

    def free(self, cudart) -> None:
        """Release the device memory and graphs (the caller has the backend's context current)."""
        for g in self.graphs.values():
            cuda_check(cudart, cudart.cudaGraphExecDestroy(g), "cudaGraphExecDestroy")
        self.graphs.clear()
        for d in [self.d_in, *self.d_out.values()]:
            if d is not None:
                d.free()
        self.d_in, self.d_out = None, {}


class _TrtPending(Pending):
    def __init__(
        self, backend: TensorRTBackend, slot: _Slot, b: int, profiler: StageProfiler | None, names: tuple[str, ...]
    ):
        self.backend, self.slot, self.b, self.profiler, self.names = backend, slot, b, profiler, names
        self._outputs: dict[str, np.ndarray] | None = None

    def result(self) -> dict[str, np.ndarray]:
        if self._outputs is not None:
            return self._outputs
        s = self.slot
        with s.lock:
            if self._outputs is None:  # not finished meanwhile by a thread that needed the slot
                with self.backend.active():
                    s.events[3].synchronize()
                    e = s.events
                    times = (e[1].time_since(e[0]), e[2].time_since(e[1]), e[3].time_since(e[2]))
                if self.profiler:
                    for stage, ms in zip(("h2d", "compute", "d2h"), times):
                        self.profiler.add(stage, ms / 1e3, source="cuda-events")
                # copy out of the pinned buffers: the slot is reused by the batch after next
                self._outputs = {n: np.array(s.h_out[n][: self.b]) for n in self.names}
                if s.pending is self:
                    s.pending = None
        return self._outputs


class TensorRTBackend(Backend):
    name = "tensorrt"
    on_gpu = True

    def __init__(self, bundle: Bundle, precision: str, *, device_id: int = 0, cuda_graph: bool = False, slots: int = 2):
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.bundle, self.precision, self.tile = bundle, precision, bundle.tile
        engines = bundle.find("engine", precision)
        if not engines:
            have = ", ".join(bundle.precisions("engine")) or "none"
            raise BackendUnavailable(
                f"bundle {bundle.root} has no {precision} TensorRT engine (engines: {have}); "
                + rebuild_hint(bundle, precision)
            )
        try:
            dev = cuda.Device(device_id)
            cc, dev_name = tuple(dev.compute_capability()), dev.name()
        except cuda.Error as e:
            raise BackendUnavailable(f"tensorrt: no usable CUDA device {device_id} ({e})") from None
        self.device = f"{dev_name} (sm_{cc[0]}{cc[1]})"
        reasons = []
        art = None
        for cand in engines:
            why = engine_mismatch(cand, trt.__version__, cc, dev_name)
            if why is None:
                art = cand
                break
            reasons.append(f"{cand.path.name}: {why}")
        if art is None:
            raise Co2SInputError(
                f"bundle {bundle.root}: no {precision} engine runs here — "
                + "; ".join(reasons)
                + ". TensorRT plans only load on the version and GPU they were built for; "
                + rebuild_hint(bundle, precision)
            )
        if art.device_name and art.device_name != dev_name:
            log.warning(
                "%s was built on %s, running on %s (same architecture): it works, but tactics were timed "
                "on the other GPU; rebuild here for best speed",
                art.path.name,
                art.device_name,
                dev_name,
            )
        path = verify_artefact(bundle, art)
        self.artefact = art
        self.cuda_graph = bool(cuda_graph)
        self._cudart = import_cudart() if self.cuda_graph else None
        self._next = 0
        self._lock = threading.Lock()  # hands out slots; each slot has its own lock
        self._slots: list[_Slot] | None = []
        try:
            self._ctx = dev.retain_primary_context()  # TensorRT uses the runtime API, i.e. the primary context
        except cuda.Error as e:
            raise BackendUnavailable(f"tensorrt: cannot use the CUDA context of {self.device} ({e})") from None
        try:
            with self.active():
                self._load(path, art, slots)
        except BaseException as e:
            self._release(getattr(self, "_slots", None) or [])
            if isinstance(e, cuda.MemoryError):
                raise BackendUnavailable(
                    f"tensorrt: out of GPU memory for the engine's buffers ({e}); free GPU memory, export a bundle "
                    "with a smaller batch, or use another backend"
                ) from None
            if isinstance(e, cuda.Error):
                raise BackendUnavailable(f"tensorrt: CUDA failed while loading the engine ({e})") from None
            raise
        self.in_flight = len(self._slots)

    def _load(self, path, art: Artefact, slots: int) -> None:
        """Deserialise the engine and set up the slots (the caller has the context current and cleans up)."""
        trt, cuda, bundle, precision = self._trt, self._cuda, self.bundle, self.precision
        self._logger = trt.Logger(trt.Logger.WARNING)
        try:
            self._runtime = trt.Runtime(self._logger)
        except TypeError as e:  # pybind11's answer to a nullptr: the runtime could not start (CUDA not usable)
            raise BackendUnavailable(f"tensorrt: TensorRT {trt.__version__} could not start a runtime ({e})") from None
        if art.version_compatible:
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        with open(path, "rb") as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise Co2SInputError(
                f"{path}: TensorRT {trt.__version__} could not deserialise this engine; "
                + rebuild_hint(bundle, precision)
            )
        self.input_name, self.batch = self._check_io(path)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = tuple(o for o in bundle.outputs if o in names)
        if "labels" not in self.outputs:
            raise Co2SInputError(f"{path}: engine has no 'labels' output (tensors: {', '.join(sorted(names))})")
        # every output tensor needs a device address, even those never copied back
        engine_outputs = [n for n in names if n != self.input_name]
        for _ in range(max(1, slots)):
            self._slots.append(
                _Slot(trt, cuda, self.engine, self.input_name, engine_outputs, self.tile, self.batch.max)
            )

    def _release(self, slots: list[_Slot]) -> None:
        """Free the slots' memory and graphs, drop the engine, and give the primary context back, leaving it current
        nowhere (also after a failed set-up: nothing may stay allocated or current)."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is None:
            return
        ctx.push()
        try:
            for s in slots:
                s.free(self._cudart)
            self.engine = self._runtime = None
        finally:
            ctx.detach()  # while current: pycuda takes it off its stack ...
            pop_driver_context()  # ... and this off CUDA's

    def active(self):
        """Context manager making this backend's CUDA context current on the calling thread."""
        backend = self

        class _Active:
            def __enter__(self_inner):
                backend._ctx.push()

            def __exit__(self_inner, *exc):
                backend._cuda.Context.pop()

        return _Active()

    def _check_io(self, path) -> tuple[str, BatchSpec]:
        trt, eng = self._trt, self.engine
        inputs = [
            eng.get_tensor_name(i)
            for i in range(eng.num_io_tensors)
            if eng.get_tensor_mode(eng.get_tensor_name(i)) == trt.TensorIOMode.INPUT
        ]
        if len(inputs) != 1:
            raise Co2SInputError(f"{path}: expected one input tensor, engine has {inputs}")
        name = inputs[0]
        shape = list(eng.get_tensor_shape(name))
        t = self.tile
        if trt.nptype(eng.get_tensor_dtype(name)) != np.uint8 or len(shape) != 4 or shape[1:] != [t, t, 3]:
            raise Co2SInputError(
                f"{path}: engine input {name!r} is {eng.get_tensor_dtype(name)} {shape}; expected "
                f"uint8 [batch, {t}, {t}, 3]"
            )
        if shape[0] > 0:
            return name, BatchSpec(shape[0], shape[0], shape[0])
        lo, opt, hi = (int(s[0]) for s in eng.get_tensor_profile_shape(name, 0))
        return name, BatchSpec(lo, opt, hi)

    def _launch(self, slot: _Slot, bb: int) -> None:
        """Queue the compute of one batch of `bb` on the slot's stream: a graph launch when one was captured for this
        size, else an ordinary enqueue (then, with graphs on, a capture of it for the next batch of this size)."""
        handle = slot.stream.handle
        graph = slot.graphs.get(bb) if self.cuda_graph else None
        if graph is not None:
            cuda_check(self._cudart, self._cudart.cudaGraphLaunch(graph, handle), "cudaGraphLaunch")
            return
        if not slot.context.execute_async_v3(handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        if self.cuda_graph:
            try:
                slot.graphs[bb] = self._capture(slot, handle)
            except CudaCallFailed as e:  # e.g. an engine whose enqueue cannot be captured: keep running without
                log.warning("CUDA graph capture failed (%s); running without graphs", e)
                self.cuda_graph = False

    def _capture(self, slot: _Slot, handle: int):
        """Record (not run) one enqueue on the slot's stream; returns the instantiated graph."""
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(cudart, cudart.cudaStreamBeginCapture(handle, mode), "cudaStreamBeginCapture")
        try:
            enqueued = slot.context.execute_async_v3(handle)
        finally:  # always end the capture: a stream left capturing refuses all later work
            ended = cudart.cudaStreamEndCapture(handle)
        graph = cuda_check(cudart, ended, "cudaStreamEndCapture")
        try:
            if not enqueued:
                raise CudaCallFailed("TensorRT execute_async_v3 failed while being captured")
            return cuda_check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            cuda_check(cudart, cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")  # the executable graph stays

    def submit(
        self, tiles: np.ndarray, profiler: StageProfiler | None = None, *, outputs: Iterable[str] | None = None
    ) -> Pending:
        self.check_tiles(tiles)
        b = tiles.shape[0]
        x = self.pad_batch(tiles)
        bb = x.shape[0]
        fetch = self.fetched_outputs(outputs)
        with self._lock:
            if self._slots is None:
                raise RuntimeError("TensorRT backend is closed")
            slot = self._slots[self._next % len(self._slots)]
            self._next += 1
        with slot.lock:
            return self._submit_on(slot, x, b, bb, fetch, profiler)

    def _submit_on(
        self, slot: _Slot, x: np.ndarray, b: int, bb: int, fetch: tuple[str, ...], profiler: StageProfiler | None
    ) -> Pending:
        """Stage and enqueue one batch on `slot`; the caller holds `slot.lock`."""
        if slot.closed:
            raise RuntimeError("TensorRT backend was closed while this batch waited for its slot")
        if slot.pending is not None:  # queued more than in_flight batches (or another thread's): finish it first
            slot.pending.result()
        cuda = self._cuda
        with self.active():
            t0 = time.perf_counter()
            slot.h_in[:bb] = x  # stage into pinned memory so the copy below is truly asynchronous
            if profiler:
                profiler.add("preprocess", time.perf_counter() - t0)
            if slot.bound_batch != bb:
                if not slot.context.set_input_shape(self.input_name, (bb, self.tile, self.tile, 3)):
                    raise RuntimeError(f"TensorRT refused a batch of {bb} (engine profile {self.batch})")
                slot.bound_batch = bb
            ev, s = slot.events, slot.stream
            ev[0].record(s)
            cuda.memcpy_htod_async(slot.d_in, slot.h_in[:bb], s)
            ev[1].record(s)
            self._launch(slot, bb)
            ev[2].record(s)
            for name in fetch:
                cuda.memcpy_dtoh_async(slot.h_out[name][:bb], slot.d_out[name], s)
            ev[3].record(s)
        pending = _TrtPending(self, slot, b, profiler, fetch)
        slot.pending = pending
        return pending

    def run(
        self, tiles: np.ndarray, profiler: StageProfiler | None = None, *, outputs: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        return self.submit(tiles, profiler, outputs=outputs).result()

    def info(self) -> BackendInfo:
        notes = [f"TensorRT {self._trt.__version__}", f"engine {self.artefact.path.name}"]
        if self.cuda_graph:
            notes.append("CUDA graphs")
        return BackendInfo(self.name, self.precision, (), self.device, tuple(notes))

    def close(self) -> None:
        """Free the device memory; calls still in flight on other threads finish first (slot locks)."""
        with self._lock:
            slots, self._slots = getattr(self, "_slots", None), None
        if slots is None:
            return
        with self.active():
            for s in slots:
                with s.lock:
                    if s.pending is not None:  # copy it out: its handle may still be asked for the result
                        s.pending.result()
                    s.closed = True
        self._release(slots)
