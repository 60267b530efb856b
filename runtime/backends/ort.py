"""onnxruntime backend: TensorRT EP, CUDA EP or CPU EP over the bundle's ONNX model of one precision.

On a GPU provider the input is copied to the device as an OrtValue and the outputs are bound on the device, so
host-to-device, compute and device-to-host are timed separately (ORT synchronises at the end of each call, so
host clocks are exact there). On the CPU provider everything is compute.

Thread safety: `InferenceSession.run` / `run_with_iobinding` may be called concurrently (onnxruntime documents
it); each call makes its own input copy, IO binding and output arrays, so one backend serves several threads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from co2s.bundle import Artefact, BatchSpec, Bundle, verify_artefact
from co2s.errors import BackendUnavailable, Co2SInputError

from ..profiler import StageProfiler
from .base import Backend, BackendInfo
from .cache import cache_dir
from .gpu_probe import cuda_devices, ort_tensorrt_libraries
from .graph_cache import cpu_session, first_line

log = logging.getLogger("co2s.runtime")

PROVIDERS = {
    "ort-trt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
JETSON_ORT = "on Jetson: onnxruntime-gpu from the Jetson wheel index (README: Deploying)"
INSTALL_HINT = {
    "ort-trt": "pip install 'co2s[gpu]' (onnxruntime-gpu, TensorRT 10 and the CUDA 13/cuDNN 9 wheels; x86-64); "
    + JETSON_ORT,
    "ort-cuda": "pip install 'co2s[gpu]' (onnxruntime-gpu with the CUDA 13/cuDNN 9 wheels it needs; x86-64); "
    + JETSON_ORT,
    "ort-cpu": "pip install 'co2s[cpu]'",
}


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def preload_cuda(ort) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu >= 1.21's preload_dlls; without it, the
    provider finds them only on the library path)."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()) as said:  # it prints; stdout is for results
            ort.preload_dlls()
        if said.getvalue().strip():
            log.debug("onnxruntime.preload_dlls: %s", said.getvalue().strip())


class OrtBackend(Backend):
    def __init__(
        self, bundle: Bundle, precision: str, name: str = "ort-cpu", *, device_id: int = 0, threads: int | None = None
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(f"{name}: onnxruntime is not installed ({INSTALL_HINT[name]})") from None
        if name not in PROVIDERS:
            raise Co2SInputError(f"unknown onnxruntime backend {name!r}; expected one of {', '.join(PROVIDERS)}")
        provider = PROVIDERS[name]
        have = ort.get_available_providers()
        if provider not in have:
            raise BackendUnavailable(
                f"{name}: this onnxruntime has no {provider} (it has {', '.join(have)}); {INSTALL_HINT[name]}"
            )
        self._ort = ort
        self.name, self.precision, self.device_id = name, precision, device_id
        self.bundle = bundle
        self.tile = bundle.tile
        self.on_gpu = name != "ort-cpu"
        art = bundle.artefact("onnx", precision)
        path = verify_artefact(bundle, art)
        companions = bundle.companions(art)
        for extra in companions:  # external weights of a >2 GB model
            verify_artefact(bundle, extra)

        def options():
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3  # errors only: the EP fallback chatter is reported by us instead
            if threads:
                so.intra_op_num_threads = int(threads)
            return so

        if self.on_gpu:
            self._gpu_ready(name)
        providers = self._provider_list(name, art, bundle, device_id)
        self.graph_note: str | None = None  # what the optimised-graph cache did (CPU only)
        t0 = time.perf_counter()
        if name == "ort-cpu":
            try:
                self.session, self.graph_note = cpu_session(ort, path, art, options, external_data=bool(companions))
            except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
                raise Co2SInputError(f"{path}: onnxruntime cannot load this model ({first_line(e)})") from None
        else:
            self._open_gpu_session(path, options(), providers)
        self.session_s = time.perf_counter() - t0  # session creation: the cold start's largest part
        actual = self.session.get_providers()
        if provider not in actual:
            raise BackendUnavailable(f"{name}: onnxruntime did not enable {provider} (it has {', '.join(actual)})")
        self.providers = tuple(actual)
        self.input_name, self.batch = self._check_io(path)
        names = {o.name for o in self.session.get_outputs()}
        self.outputs = tuple(o for o in bundle.outputs if o in names)
        missing = [o for o in ("labels", "confidence") if o not in names]
        if missing:
            raise Co2SInputError(f"{path}: model has no output {missing[0]!r} (outputs: {', '.join(sorted(names))})")

    def _gpu_ready(self, name: str) -> None:
        """BackendUnavailable unless a CUDA device is there and the provider's libraries can be found."""
        gpu = cuda_devices()
        if not gpu:
            raise BackendUnavailable(f"{name}: no CUDA device ({gpu.detail})")
        preload_cuda(self._ort)
        if name == "ort-trt" and (why := ort_tensorrt_libraries()):
            raise BackendUnavailable(
                f"ort-trt: onnxruntime's TensorRT provider needs TensorRT 10 and {why}; {INSTALL_HINT[name]}"
            )

    def _open_gpu_session(self, path: Path, so, providers: list) -> None:
        """A session on a GPU provider, or BackendUnavailable saying why there is none. onnxruntime raises when a
        provider cannot start; for a provider whose library fails to load it prints an `EP Error` on stdout and
        retries on the next provider, or logs it and runs on the CPU. Each means this backend cannot run here,
        so `--backend auto` moves on (a broken model is refused again by the CPU backend)."""
        name, provider = self.name, PROVIDERS[self.name]
        with contextlib.redirect_stdout(io.StringIO()) as said:
            try:
                self.session = self._ort.InferenceSession(str(path), so, providers=providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
                raise BackendUnavailable(
                    f"{name}: onnxruntime could not start {provider} ({first_line(e)}); {INSTALL_HINT[name]}"
                ) from None
        actual = self.session.get_providers()
        if provider not in actual:
            ep_error = next((ln for ln in said.getvalue().splitlines() if ln.startswith("EP Error")), None)
            why = (
                f" ({first_line(ep_error.removeprefix('EP Error').split(' when using ')[0])})"
                if ep_error
                else " (onnxruntime's log names the library it could not load)"
            )
            raise BackendUnavailable(
                f"{name}: onnxruntime did not enable {provider}, the session would run on {', '.join(actual)}"
                f"{why}; {INSTALL_HINT[name]}"
            )

    @staticmethod
    def _provider_list(name: str, art: Artefact, bundle: Bundle, device_id: int) -> list:
        if name == "ort-cpu":
            return ["CPUExecutionProvider"]
        cuda = ("CUDAExecutionProvider", {"device_id": device_id})
        if name == "ort-cuda":
            return [cuda, "CPUExecutionProvider"]
        cache = cache_dir() / "ort-trt" / ((art.sha256 or "nohash")[:16] + "-" + art.precision)
        cache.mkdir(parents=True, exist_ok=True)
        opts = {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            # reduced precision already lives in the graph (FP16 casts, INT8 Q/DQ); these flags let TensorRT
            # honour it (Q/DQ needs the INT8 flag on weakly typed builds) and pick FP16 around it
            "trt_fp16_enable": art.precision in ("fp16", "int8"),
            "trt_int8_enable": art.precision == "int8",
        }
        b, t, inp = bundle.batch, bundle.tile, bundle.input_name
        if b.dynamic:  # one engine for the whole range instead of one rebuild per batch size seen
            opts.update(
                trt_profile_min_shapes=f"{inp}:{b.min}x{t}x{t}x3",
                trt_profile_opt_shapes=f"{inp}:{b.opt}x{t}x{t}x3",
                trt_profile_max_shapes=f"{inp}:{b.max}x{t}x{t}x3",
            )
        return [("TensorrtExecutionProvider", opts), cuda, "CPUExecutionProvider"]

    def _check_io(self, path: Path) -> tuple[str, BatchSpec]:
        ins = self.session.get_inputs()
        if len(ins) != 1:
            raise Co2SInputError(f"{path}: expected one input, model has {len(ins)}")
        i = ins[0]
        t = self.tile
        shape = list(i.shape)
        if i.type != "tensor(uint8)" or len(shape) != 4 or shape[1:] != [t, t, 3]:
            raise Co2SInputError(
                f"{path}: input {i.name!r} is {i.type} {shape}; the bundle says uint8 [batch, {t}, {t}, 3] (NHWC RGB)"
            )
        if i.name != self.bundle.input_name:
            log.warning(
                "%s: input is named %r, manifest says %r; using the model's", path, i.name, self.bundle.input_name
            )
        b0 = shape[0]
        if isinstance(b0, int) and b0 > 0:
            return i.name, BatchSpec(b0, b0, b0)
        return i.name, self.bundle.batch

    def run(
        self, tiles: np.ndarray, profiler: StageProfiler | None = None, *, outputs: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.check_tiles(tiles)
        b = tiles.shape[0]
        x = np.ascontiguousarray(self.pad_batch(tiles))
        names = self.fetched_outputs(outputs)  # per call: nothing here is shared between concurrent calls
        if not self.on_gpu:
            t0 = time.perf_counter()
            outs = self.session.run(list(names), {self.input_name: x})
            if profiler:
                profiler.add("compute", time.perf_counter() - t0)
        else:
            ort = self._ort
            t0 = time.perf_counter()
            xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id)
            t1 = time.perf_counter()
            io = self.session.io_binding()
            io.bind_ortvalue_input(self.input_name, xv)
            for o in names:
                io.bind_output(o, "cuda", self.device_id)
            self.session.run_with_iobinding(io)
            t2 = time.perf_counter()
            outs = io.copy_outputs_to_cpu()
            t3 = time.perf_counter()
            if profiler:
                profiler.add("h2d", t1 - t0)
                profiler.add("compute", t2 - t1)
                profiler.add("d2h", t3 - t2)
        return {n: o[:b] for n, o in zip(names, outs)}

    def info(self) -> BackendInfo:
        notes = (f"onnxruntime {self._ort.__version__}",) + ((self.graph_note,) if self.graph_note else ())
        return BackendInfo(self.name, self.precision, self.providers, notes=notes)
