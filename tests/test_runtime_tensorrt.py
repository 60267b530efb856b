"""Native TensorRT backend. The compatibility checks (TensorRT version, GPU architecture, rebuild hint) run
everywhere with stand-in modules; building and running a real engine needs tensorrt, pycuda and a GPU and is
skipped otherwise, with the reason."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from runtime_fakes import make_bundle

from co2s.bundle import Artefact, artefact_record, load_bundle, read_manifest, write_manifest
from co2s.bundle.formats import get_format
from co2s.errors import Co2SInputError
from co2s.runtime.backends import BackendUnavailable, open_backend
from co2s.runtime.backends import tensorrt as trt_backend
from co2s.runtime.backends.tensorrt import engine_mismatch


def _art(version="10.3.0", cc=(8, 7), vc=False, hw=None, name="Orin"):
    return Artefact(
        "engine",
        "fp16",
        Path("model.fp16.engine"),
        None,
        trt_version=version,
        device_name=name,
        compute_capability=cc,
        version_compatible=vc,
        hardware_compatibility=hw,
    )


def test_engine_compatibility_rules():
    assert engine_mismatch(_art(), "10.3.0.30", (8, 7), "Orin") is None
    assert "built with TensorRT 10.3.0, this runtime is 10.8.0" in engine_mismatch(_art(), "10.8.0", (8, 7), "Orin")
    assert "sm_87" in engine_mismatch(_art(), "10.3.0", (9, 0), "NVIDIA H100")
    assert engine_mismatch(_art(vc=True), "10.8.0", (8, 7), "Orin") is None  # newer runtime, same major
    assert engine_mismatch(_art(vc=True), "11.1.0", (8, 7), "Orin") is None  # TRT-10 VC plans run on 11
    assert engine_mismatch(_art(vc=True), "10.2.0", (8, 7), "Orin") is not None  # older runtime
    assert engine_mismatch(_art(cc=(8, 0), hw="ampere_plus"), "10.3.0", (9, 0), "H100") is None
    assert engine_mismatch(_art(cc=(8, 0), hw="ampere_plus"), "10.3.0", (7, 5), "T4") is not None


def bundle_with_engine(root: Path, *, version="10.3.0", cc="8.7", device="Orin") -> Path:
    make_bundle(root, tile=32, precisions=("fp32", "fp16"))
    engine = get_format("engine", "fp16")
    (root / engine.filename).write_bytes(b"\x00plan-bytes-only-a-GPU-can-read" * 10)
    data = read_manifest(root)
    data["artifacts"][engine.key] = artefact_record(
        root,
        engine,
        tensorrt={"version": version, "strongly_typed": True, "device": {"name": device, "compute_capability": cc}},
    )
    write_manifest(root, data)
    return root


class _FakeDevice:
    def __init__(self, n):
        pass

    def compute_capability(self):
        return (9, 0)

    def name(self):
        return "NVIDIA H100 80GB HBM3"


def _fake_modules(version="10.8.0"):
    trt = types.SimpleNamespace(__version__=version)
    cuda = types.SimpleNamespace(Device=_FakeDevice)
    return trt, cuda


def test_mismatched_engine_is_refused_with_a_rebuild_command(tmp_path, monkeypatch):
    """Before deserialising: the manifest says TensorRT 10.3 / Orin (sm_87), this 'machine' is 10.8 / H100."""
    b = load_bundle(bundle_with_engine(tmp_path / "b"))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: _fake_modules())
    with pytest.raises(Co2SInputError) as e:
        open_backend(b, "tensorrt", "fp16")
    msg = str(e.value)
    assert "TensorRT 10.3.0" in msg and "10.8.0" in msg and "sm_87" in msg and "sm_90" in msg
    assert f"co2s-export --from-bundle {b.root} --engine fp16" in msg
    # auto: says why, then runs the ONNX model instead
    be = open_backend(b, "auto", "fp16")
    assert be.name.startswith("ort-") and be.precision == "fp16"


def test_engine_checksum_is_verified_before_deserialising(tmp_path, monkeypatch):
    root = bundle_with_engine(tmp_path / "b", version="10.8.0", cc="9.0", device="NVIDIA H100 80GB HBM3")
    b = load_bundle(root)
    data = bytearray((root / "model.fp16.engine").read_bytes())
    data[0] ^= 1
    (root / "model.fp16.engine").write_bytes(bytes(data))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: _fake_modules())
    with pytest.raises(Co2SInputError, match=r"checksum mismatch for model\.fp16\.engine"):
        open_backend(b, "tensorrt", "fp16")


def test_without_tensorrt_the_backend_says_what_to_install(tmp_path):
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt and pycuda are installed here; this checks the message on machines without them")
    except ImportError:
        pass
    b = load_bundle(bundle_with_engine(tmp_path / "b"))
    with pytest.raises(BackendUnavailable, match="pip install"):
        open_backend(b, "tensorrt", "fp16")
    assert open_backend(b).name.startswith("ort-")


# --- on a GPU with TensorRT -------------------------------------------------------------------------------------


def _gpu_reason() -> str | None:
    try:
        trt_backend.import_tensorrt()
    except BackendUnavailable as e:
        return f"native TensorRT test needs tensorrt, pycuda and an NVIDIA GPU: {e}"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=_gpu_reason() or "")


def build_engine_bundle(root: Path, *, batch=(1, 2, 4), tile=32, probs=True) -> Path:
    """A fake bundle plus a real fp32 engine built here from its ONNX, recorded like co2s-export does."""
    import tensorrt as trt

    make_bundle(root, tile=tile, batch=batch, probs=probs)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((root / "model.fp32.onnx").read_bytes()), [
        parser.get_error(i) for i in range(parser.num_errors)
    ]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    profile.set_shape("images", (lo, tile, tile, 3), (opt, tile, tile, 3), (hi, tile, tile, 3))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    engine = get_format("engine", "fp32")
    (root / engine.filename).write_bytes(bytes(plan))
    import pycuda.driver as cuda

    cuda.init()
    d = cuda.Device(0)
    data = read_manifest(root)
    data["artifacts"][engine.key] = artefact_record(
        root,
        engine,
        tensorrt={
            "version": trt.__version__,
            "device": {"name": d.name(), "compute_capability": "{}.{}".format(*d.compute_capability())},
            "profile": {"min": lo, "opt": opt, "max": hi},
        },
    )
    write_manifest(root, data)
    return root


@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_matches_onnxruntime(tmp_path, cuda_graph):
    b = load_bundle(build_engine_bundle(tmp_path / "b"))
    ref = open_backend(b, "ort-cpu", "fp32")
    be = open_backend(b, "tensorrt", "fp32", cuda_graph=cuda_graph)
    assert be.name == "tensorrt" and be.batch.max == 4 and be.in_flight == 2
    from co2s.runtime.profiler import StageProfiler

    prof = StageProfiler()
    x = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    pend = [be.submit(x[i : i + 3], prof) for i in range(0, 7, 3)]  # 3 batches queued on 2 slots
    got = [p.result() for p in pend]
    for i, g in zip(range(0, 7, 3), got):
        r = ref.run(x[i : i + 3])
        assert np.mean(g["labels"] == r["labels"]) > 0.999
        np.testing.assert_allclose(g["confidence"], r["confidence"], atol=1e-3)
    rep = prof.report()
    for stage in ("h2d", "compute", "d2h"):
        assert rep["stages"][stage]["count"] == 3 and rep["stages"][stage]["source"] == "cuda-events"
    be.close()


@needs_gpu
def test_tensorrt_pipeline_end_to_end(tmp_path):
    from PIL import Image

    from co2s.runtime.pipeline import run_inference

    b = load_bundle(build_engine_bundle(tmp_path / "b"))
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    be = open_backend(b, "tensorrt", "fp32")
    summary = run_inference(b, be, [tmp_path / "a.png"], tmp_path / "out_trt")
    ref = run_inference(b, open_backend(b, "ort-cpu", "fp32"), [tmp_path / "a.png"], tmp_path / "out_ort")
    assert summary.results[0].status == ref.results[0].status == "ok"
    a = np.asarray(Image.open(tmp_path / "out_trt" / "a.labels.png"))
    r = np.asarray(Image.open(tmp_path / "out_ort" / "a.labels.png"))
    assert np.mean(a == r) > 0.999


# --- orchestration with stand-in tensorrt/pycuda modules (runs everywhere) ----------------------------------------


class _Fakes:
    """Just enough of tensorrt + pycuda.driver to drive TensorRTBackend: 'device memory' is numpy, the 'engine'
    applies runtime_fakes.pixel_rule, and stream capture records enqueues for replay."""

    def __init__(self, tile: int, num_classes: int, profile=(1, 2, 4), version="10.3.0.26"):
        from runtime_fakes import pixel_rule

        fk = self
        self.memory: dict[int, np.ndarray] = {}
        self.launches = {"enqueue": 0, "graph": 0}
        T, N = tile, num_classes

        class Mem:
            next_ptr = 4096

            def __init__(self, nbytes):
                self.buf = np.zeros(nbytes, np.uint8)
                self.ptr = Mem.next_ptr
                Mem.next_ptr += nbytes + 4096
                fk.memory[self.ptr] = self.buf

            def __int__(self):
                return self.ptr

            def free(self):
                fk.memory.pop(self.ptr, None)

        class Graph:
            def __init__(self, calls):
                self.calls = calls

            def instantiate(self):
                return self

            def launch(self, stream=None):
                fk.launches["graph"] += 1
                for c in self.calls:
                    c()

        class Stream:
            handle = 1

            def __init__(self):
                self.capture = None

            def synchronize(self):
                pass

            def begin_capture(self):
                self.capture = []

            def end_capture(self):
                g, self.capture = Graph(self.capture), None
                return g

        class Event:
            def record(self, stream=None):
                pass

            def synchronize(self):
                pass

            def time_since(self, other):
                return 0.5

        class Ctx:
            def push(self):
                pass

            def detach(self):
                pass

        class Device:
            def __init__(self, i):
                pass

            @staticmethod
            def count():
                return 1

            def compute_capability(self):
                return (8, 7)

            def name(self):
                return "Orin"

            def retain_primary_context(self):
                return Ctx()

        def htod(dst, src, stream):
            dst.buf[: src.nbytes] = np.ascontiguousarray(src).view(np.uint8).ravel()

        def dtoh(dst, src, stream):
            dst.view(np.uint8).reshape(-1)[:] = src.buf[: dst.nbytes]

        self.cuda = types.SimpleNamespace(
            init=lambda: None,
            Device=Device,
            Context=types.SimpleNamespace(pop=lambda: None),
            Stream=Stream,
            Event=Event,
            pagelocked_empty=lambda shape, dtype: np.zeros(shape, dtype),
            mem_alloc=Mem,
            memcpy_htod_async=htod,
            memcpy_dtoh_async=dtoh,
            Error=RuntimeError,
        )

        outs = {"labels": np.uint8, "confidence": np.float16, "probs": np.float16}

        class Context:
            def __init__(self):
                self.addr, self.b = {}, None

            def set_input_shape(self, name, shape):
                self.b = shape[0]
                return True

            def get_tensor_shape(self, name):
                return (self.b, N, T, T) if name == "probs" else (self.b, T, T)

            def set_tensor_address(self, name, ptr):
                self.addr[name] = ptr

            def _run(self, b):
                x = fk.memory[self.addr["images"]][: b * T * T * 3].reshape(b, T, T, 3)
                res = pixel_rule(x, N)
                for name, dt in outs.items():
                    v = np.ascontiguousarray(res[name].astype(dt)).view(np.uint8).ravel()
                    fk.memory[self.addr[name]][: v.size] = v

            def execute_async_v3(self, handle):
                b = self.b
                if stream_capture[0] is not None:
                    stream_capture[0].append(lambda: self._run(b))
                else:
                    fk.launches["enqueue"] += 1
                    self._run(b)
                return True

        stream_capture = [None]
        orig_begin, orig_end = Stream.begin_capture, Stream.end_capture

        def begin(self_s):
            orig_begin(self_s)
            stream_capture[0] = self_s.capture

        def end(self_s):
            stream_capture[0] = None
            return orig_end(self_s)

        Stream.begin_capture, Stream.end_capture = begin, end

        names = ["images", "labels", "confidence", "probs"]

        class Engine:
            num_io_tensors = 4

            def get_tensor_name(self, i):
                return names[i]

            def get_tensor_mode(self, name):
                return "in" if name == "images" else "out"

            def get_tensor_shape(self, name):
                return [-1, T, T, 3] if name == "images" else [-1, T, T]

            def get_tensor_dtype(self, name):
                return np.uint8 if name == "images" else outs[name]

            def get_tensor_profile_shape(self, name, i):
                return [(b, T, T, 3) for b in profile]

            def create_execution_context(self):
                return Context()

        class Runtime:
            engine_host_code_allowed = False

            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return Engine()

        self.trt = types.SimpleNamespace(
            __version__=version,
            Logger=type("L", (), {"WARNING": 2, "__init__": lambda s, lvl: None}),
            Runtime=Runtime,
            TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
            nptype=lambda d: d,
        )


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_orchestration_with_stand_in_modules(tmp_path, monkeypatch, cuda_graph):
    """Slots, pinned staging, padding, copy-back and event timings, without a GPU (the real API is exercised by
    the GPU tests above)."""
    from runtime_fakes import pixel_rule

    from co2s.runtime.pipeline import predict_array
    from co2s.runtime.profiler import StageProfiler

    fakes = _Fakes(32, 4)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: (fakes.trt, fakes.cuda))
    root = bundle_with_engine(tmp_path / "b", version="10.3.0", cc="8.7")
    b = load_bundle(root)
    be = open_backend(b, "tensorrt", "fp16", cuda_graph=cuda_graph)
    assert (be.name, be.batch.max, be.in_flight) == ("tensorrt", 4, 2)
    prof = StageProfiler()
    x = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    pend = [be.submit(x[i : i + 3], prof) for i in range(0, 9, 3)]  # third batch reuses slot 0
    for i, p in zip(range(0, 9, 3), pend):
        got, want = p.result(), pixel_rule(x[i : i + 3], 4)
        assert np.array_equal(got["labels"], want["labels"])
        np.testing.assert_allclose(got["confidence"].astype(np.float32), want["confidence"], atol=1e-3)
    rep = prof.report()
    assert rep["stages"]["compute"]["count"] == 3 and rep["stages"]["compute"]["source"] == "cuda-events"
    if cuda_graph:
        assert fakes.launches["graph"] == 3
    rgb = np.random.default_rng(1).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    assert np.array_equal(predict_array(be, rgb)["labels"], pixel_rule(rgb[None], 4)["labels"][0])
    be.close()
