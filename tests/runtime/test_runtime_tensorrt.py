"""Native TensorRT backend. The compatibility checks (TensorRT version, GPU architecture, rebuild hint) run
everywhere with stand-in modules; building and running a real engine needs tensorrt, pycuda and a GPU and is
skipped otherwise, with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes.api import FakeApiError
from fakes.gpu import Gpu
from fakes.runtime import bundle_with_engine, make_bundle
from fakes.tensorrt import TENSORRT_KEYS, VERSIONS, install

from co2s.bundle import Artefact, artefact_record, load_bundle, read_manifest, write_manifest
from co2s.bundle.formats import get_format
from co2s.errors import Co2SInputError
from co2s.runtime.backends import BackendUnavailable, open_backend
from co2s.runtime.backends import tensorrt as trt_backend
from co2s.runtime.backends.tensorrt import TensorRTBackend, engine_mismatch


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


def test_mismatched_engine_is_refused_with_a_rebuild_command(tmp_path, monkeypatch):
    """Before deserialising: the manifest says TensorRT 10.3 / Orin (sm_87), this 'machine' is 10.8 / H100."""
    b = load_bundle(bundle_with_engine(tmp_path / "b"))
    gpu = install(monkeypatch, gpu=Gpu(name="NVIDIA H100 80GB HBM3", cc=(9, 0)), version="10.8.0")
    with pytest.raises(Co2SInputError) as e:
        open_backend(b, "tensorrt", "fp16")
    msg = str(e.value)
    assert "TensorRT 10.3.0" in msg and "10.8.0" in msg and "sm_87" in msg and "sm_90" in msg
    assert f"co2s-export --from-bundle {b.root} --engine fp16" in msg
    # auto: says why, then runs the ONNX model instead
    be = open_backend(b, "auto", "fp16")
    assert be.name.startswith("ort-") and be.precision == "fp16"
    assert gpu.primary_retains == 0  # refused before any context was taken


def test_engine_checksum_is_verified_before_deserialising(tmp_path, monkeypatch):
    root = bundle_with_engine(tmp_path / "b", version="10.8.0", cc="9.0", device="NVIDIA H100 80GB HBM3")
    b = load_bundle(root)
    data = bytearray((root / "model.fp16.engine").read_bytes())
    data[0] ^= 1
    (root / "model.fp16.engine").write_bytes(bytes(data))
    install(monkeypatch, gpu=Gpu(name="NVIDIA H100 80GB HBM3", cc=(9, 0)), version="10.8.0")
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


# --- orchestration with stand-in tensorrt/pycuda/cuda-python modules (runs everywhere) ----------------------------
# The stand-ins (tests/fakes/) keep to the real API recorded in tests/data/gpu_api.json: a call the real bindings
# refuse, or a return value they never give, fails the test.

ORT_FALLBACK = "ort-"


def _stand_in(tmp_path, monkeypatch, api_key=TENSORRT_KEYS[0], **engine):
    gpu = install(monkeypatch, api_key, **engine)
    version = VERSIONS[api_key]
    b = load_bundle(bundle_with_engine(tmp_path / "b", version=version, cc="8.7"))
    return gpu, b


def _assert_released(gpu) -> None:
    """Nothing allocated, nothing current: the retained primary context was given back and popped everywhere."""
    assert gpu.primary_retains == 0
    assert gpu.driver_stack == [] and gpu.pycuda_stack == []
    assert gpu.memory == {}
    graphs, execs = gpu.modules["cudart"].live_graphs
    assert graphs == {} and execs == {}


@pytest.mark.parametrize("api_key", TENSORRT_KEYS)
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_orchestration_with_stand_in_modules(tmp_path, monkeypatch, api_key, cuda_graph):
    """Slots, pinned staging, padding, copy-back and event timings, without a GPU (the real API is exercised by
    the GPU tests above)."""
    from fakes.runtime import pixel_rule

    from co2s.runtime.pipeline import predict_array
    from co2s.runtime.profiler import StageProfiler

    gpu, b = _stand_in(tmp_path, monkeypatch, api_key)
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
    assert gpu.counts["compute"] == 3  # each batch computed exactly once
    if cuda_graph:
        # the first batch on each slot is an ordinary enqueue, captured after it; the third replays slot 0's graph
        assert (gpu.counts["enqueue"], gpu.counts["capture"], gpu.counts["graph_launch"]) == (2, 2, 1)
        assert "CUDA graphs" in be.info().notes
    else:
        assert (gpu.counts["enqueue"], gpu.counts["capture"], gpu.counts["graph_launch"]) == (3, 0, 0)
    rgb = np.random.default_rng(1).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    assert np.array_equal(predict_array(be, rgb)["labels"], pixel_rule(rgb[None], 4)["labels"][0])
    be.close()
    _assert_released(gpu)


def test_cuda_graphs_replace_the_enqueue_after_the_first_batch_of_each_size(tmp_path, monkeypatch):
    from fakes.runtime import pixel_rule

    gpu, b = _stand_in(tmp_path, monkeypatch)
    be = TensorRTBackend(b, "fp16", cuda_graph=True, slots=1)
    rng = np.random.default_rng(2)
    sizes = [3, 3, 3, 2, 2, 3, 4]
    for n in sizes:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        assert np.array_equal(be.run(x)["labels"], pixel_rule(x, 4)["labels"])
    assert gpu.counts["compute"] == len(sizes)
    # one ordinary enqueue (then a capture) per batch size seen; every other batch is a graph launch
    assert gpu.counts["enqueue"] == gpu.counts["capture"] == len(set(sizes))
    assert gpu.counts["graph_launch"] == len(sizes) - len(set(sizes))
    be.warmup(batches=2, batch_size=2)  # warm-up batches follow the same rule: no batch runs twice
    assert gpu.counts["compute"] == len(sizes) + 2 and gpu.counts["graph_launch"] == len(sizes) - len(set(sizes)) + 2
    be.close()
    _assert_released(gpu)


@pytest.mark.parametrize("fail", ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate"])
def test_a_failed_capture_turns_graphs_off_without_running_the_batch_again(tmp_path, monkeypatch, caplog, fail):
    from fakes.runtime import pixel_rule

    gpu, b = _stand_in(tmp_path, monkeypatch)
    gpu.fail.add(fail)
    be = TensorRTBackend(b, "fp16", cuda_graph=True, slots=1)
    x = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="co2s.runtime"):
        for _ in range(3):
            assert np.array_equal(be.run(x)["labels"], pixel_rule(x, 4)["labels"])
    assert "CUDA graph capture failed" in caplog.text and fail in caplog.text
    assert be.cuda_graph is False and "CUDA graphs" not in be.info().notes
    assert gpu.counts["compute"] == gpu.counts["enqueue"] == 3 and gpu.counts["graph_launch"] == 0
    be.close()
    _assert_released(gpu)


def test_cuda_graph_without_cuda_python_says_what_to_install(tmp_path, monkeypatch):
    gpu, b = _stand_in(tmp_path, monkeypatch)

    def missing():
        raise BackendUnavailable("tensorrt: --cuda-graph needs cuda-python (pip install cuda-python)")

    monkeypatch.setattr(trt_backend, "import_cudart", missing)
    with pytest.raises(BackendUnavailable, match="cuda-python"):
        open_backend(b, "tensorrt", "fp16", cuda_graph=True)
    assert open_backend(b, "auto", "fp16", cuda_graph=True).name.startswith(ORT_FALLBACK)
    assert gpu.primary_retains == 0


def test_the_real_import_paths_of_cuda_python(monkeypatch):
    """cuda-python >= 12.6 has cuda.bindings.runtime; older releases only `from cuda import cudart`."""
    import sys
    import types

    new = types.ModuleType("cuda.bindings.runtime")
    old = types.ModuleType("cuda.cudart")
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    pkg.__path__, bindings.__path__ = [], []
    pkg.bindings, bindings.runtime, pkg.cudart = bindings, new, old
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", new)
    assert trt_backend.import_cudart() is new
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # not there: the old path
    monkeypatch.delattr(bindings, "runtime")
    assert trt_backend.import_cudart() is old
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    monkeypatch.delattr(pkg, "cudart")
    with pytest.raises(BackendUnavailable, match="pip install cuda-python"):
        trt_backend.import_cudart()


# each: the stand-in call that fails, and what the real bindings do then
SETUP_FAILURES = {
    "Runtime": "could not start a runtime",  # pybind11 TypeError: factory function returned nullptr
    "create_execution_context": "could not create an execution context",  # returns None
    "set_input_shape": "refuses input shape",  # returns False
    "set_tensor_address": "refused the device buffer",  # returns False
    "mem_alloc": "out of GPU memory",  # pycuda MemoryError
    "pagelocked_empty": "out of GPU memory",  # pycuda MemoryError
    "retain_primary_context": "cannot use the CUDA context",  # pycuda Error
}


@pytest.mark.parametrize("fail", sorted(SETUP_FAILURES))
def test_setup_failures_are_backend_unavailable_and_release_the_context(tmp_path, monkeypatch, caplog, fail):
    gpu, b = _stand_in(tmp_path, monkeypatch)
    gpu.fail.add(fail)
    with pytest.raises(BackendUnavailable, match=SETUP_FAILURES[fail]) as e:
        open_backend(b, "tensorrt", "fp16")
    assert "\n" not in str(e.value)
    _assert_released(gpu)
    gpu.fail.add(fail)
    with caplog.at_level("INFO", logger="co2s.runtime"):
        be = open_backend(b, "auto", "fp16")  # falls back to onnxruntime, and says why
    assert be.name.startswith(ORT_FALLBACK)
    assert SETUP_FAILURES[fail] in caplog.text
    _assert_released(gpu)


def test_an_engine_that_does_not_deserialise_names_the_rebuild_and_releases(tmp_path, monkeypatch):
    gpu, b = _stand_in(tmp_path, monkeypatch)
    gpu.fail.add("deserialize_cuda_engine")
    with pytest.raises(Co2SInputError, match="could not deserialise this engine; rebuild the engine"):
        open_backend(b, "tensorrt", "fp16")
    _assert_released(gpu)


@pytest.mark.parametrize("fail", ["execute_async_v3", "set_input_shape", "cudaGraphLaunch"])
def test_run_time_failures_are_reported_not_ignored(tmp_path, monkeypatch, fail):
    gpu, b = _stand_in(tmp_path, monkeypatch)
    be = TensorRTBackend(b, "fp16", cuda_graph=True, slots=1)
    x = np.zeros((2, 32, 32, 3), np.uint8)
    be.run(x)  # enqueue + capture for a batch of 2
    gpu.fail.add(fail)
    y = x if fail == "cudaGraphLaunch" else np.zeros((3 if fail == "set_input_shape" else 1, 32, 32, 3), np.uint8)
    with pytest.raises(RuntimeError, match="execute_async_v3 failed|refused a batch of 3|cudaGraphLaunch failed"):
        be.run(y)
    be.close()
    _assert_released(gpu)


def test_stand_ins_refuse_what_the_real_api_refuses(tmp_path, monkeypatch):
    """The fakes are not looser than the bindings: a wrong argument type or an unknown member fails."""
    gpu, b = _stand_in(tmp_path, monkeypatch)
    be = TensorRTBackend(b, "fp16", slots=1)
    ctx = be._slots[0].context
    with pytest.raises(FakeApiError, match="execute_async_v3"):
        ctx.execute_async_v3(be._slots[0].stream)  # a pycuda Stream, not its int handle
    with pytest.raises(FakeApiError, match="set_input_shape"):
        ctx.set_input_shape("images", "4x32x32x3")
    with pytest.raises(AttributeError):
        be._slots[0].stream.begin_capture  # noqa: B018 - pycuda's Stream has no capture API
    be.close()
