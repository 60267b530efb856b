"""TensorRT engines: the builder's orchestration and failure handling with a stand-in `tensorrt` kept to the recorded
API (runs everywhere), and real builds from the tiny bundle where a GPU, the tensorrt package and CUDA torch exist."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from fakes.gpu import Gpu
from fakes.tensorrt import TENSORRT_KEYS, VERSIONS, tensorrt_module

from co2s.export import tensorrt_build
from co2s.export.tensorrt_build import EngineBuildError, build_engine, has_nvidia_gpu

try:
    import tensorrt as trt
except ImportError:
    trt = None
needs_gpu = pytest.mark.skipif(
    trt is None or not has_nvidia_gpu(),
    reason="TensorRT engines are built on the target GPU: needs an NVIDIA GPU and tensorrt (co2s[gpu])",
)

BATCH = {"dynamic": True, "min": 1, "opt": 2, "max": 4}


def _build(tmp_path, monkeypatch, api_key=TENSORRT_KEYS[0], fail=(), cache=b"old-cache"):
    gpu = Gpu()
    gpu.fail.update(fail)
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_module(api_key, gpu, plan=b"\x00plan-bytes"))
    monkeypatch.setattr(tensorrt_build, "device_info", lambda: {"name": "Stand-in GPU", "compute_capability": "8.7"})
    onnx = tmp_path / "model.fp16.onnx"
    onnx.write_bytes(b"onnx")
    timing = tmp_path / "timing.cache"
    timing.write_bytes(cache)
    notes: list[str] = []
    record = build_engine(
        onnx,
        tmp_path / "model.fp16.engine",
        precision="fp16",
        batch=BATCH,
        input_name="images",
        input_shape=(1, 32, 32, 3),
        timing_cache=timing,
        log=notes.append,
    )
    return record, notes, timing


@pytest.mark.parametrize("api_key", TENSORRT_KEYS)
def test_build_with_the_stand_in_tensorrt(tmp_path, monkeypatch, api_key):
    record, notes, timing = _build(tmp_path, monkeypatch, api_key)
    assert record["version"] == VERSIONS[api_key] and record["strongly_typed"] and record["builder_flags"] == []
    assert record["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert (tmp_path / "model.fp16.engine").read_bytes() == b"\x00plan-bytes"
    assert timing.read_bytes() == b"old-cache+timing"  # extended and written back


@pytest.mark.parametrize(
    "fail, message",
    [
        ("Builder", "could not create a builder .*factory function returned nullptr.*; check that CUDA works"),
        ("create_network", "could not create a network"),
        ("parse_from_file", "could not parse the ONNX"),
        ("add_optimization_profile", "refused the batch profile 1/2/4 for input 'images'"),
        ("build_serialized_network", "failed to build the fp16 engine"),
    ],
)
def test_build_failures_are_one_line_errors(tmp_path, monkeypatch, fail, message):
    with pytest.raises(EngineBuildError, match=message) as e:
        _build(tmp_path, monkeypatch, fail={fail})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "model.fp16.engine").exists()


@pytest.mark.parametrize("fail", ["create_timing_cache", "set_timing_cache"])
def test_a_timing_cache_tensorrt_refuses_is_skipped(tmp_path, monkeypatch, fail):
    record, notes, timing = _build(tmp_path, monkeypatch, fail={fail})
    assert any("did not take the timing cache" in n for n in notes)
    assert timing.read_bytes() == b"old-cache"  # left as it was
    assert (tmp_path / "model.fp16.engine").read_bytes() == b"\x00plan-bytes"


def test_a_tensorrt_without_strongly_typed_networks_is_refused(tmp_path, monkeypatch):
    with pytest.raises(EngineBuildError, match="install TensorRT 10.3 or newer"):
        monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: type("Old", (), {"__version__": "8.6.1"}))
        _build(tmp_path, monkeypatch)


def test_cli_reports_a_builder_that_cannot_start_in_one_line(tmp_path, monkeypatch, run_cli):
    """A TypeError from trt.Builder (CUDA unusable) used to end `co2s-export --engine` in a traceback."""
    from fakes.runtime import make_bundle

    import co2s.export.engines as engines

    gpu = Gpu()
    gpu.fail.add("Builder")
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_module(gpu=gpu))
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: True)
    b = make_bundle(tmp_path / "b", tile=32, precisions=("fp32", "fp16"))
    code, _, err = run_cli("co2s-export", ["--from-bundle", b, "--engine", "fp16"])
    assert code == 1 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        ln for ln in err.splitlines() if "could not create a builder" in ln
    ]


# --- on a GPU with TensorRT -------------------------------------------------------------------------------------


def _run_engine(path, images: np.ndarray) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA: cannot hold engine buffers")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())  # plain plan bytes, no header
    assert engine is not None
    ctx = engine.create_execution_context()
    dtypes = {trt.uint8: torch.uint8, trt.float32: torch.float32, trt.float16: torch.float16}
    outs: dict[str, list[np.ndarray]] = {}
    stream = torch.cuda.Stream()
    for i in range(len(images)):
        x = torch.from_numpy(images[i : i + 1]).cuda()
        bufs = {}
        for k in range(engine.num_io_tensors):
            name = engine.get_tensor_name(k)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                ctx.set_input_shape(name, tuple(x.shape))
                bufs[name] = x
        for k in range(engine.num_io_tensors):
            name = engine.get_tensor_name(k)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                bufs[name] = torch.empty(
                    tuple(ctx.get_tensor_shape(name)), dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda"
                )
        for name, t in bufs.items():
            ctx.set_tensor_address(name, t.data_ptr())
        assert ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        for name, t in bufs.items():
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                outs.setdefault(name, []).append(t.cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


@needs_gpu
def test_engines_build_strongly_typed_and_agree_with_onnx(tmp_path, tiny_bundle):
    from co2s.bundle import load_bundle
    from co2s.export.engines import add_engines
    from co2s.export.parity import run_onnx
    from co2s.train.data import make_scene

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    result = add_engines(bundle, ("fp16", "int8"), workspace_gib=2.0, log=lambda *_: None)
    assert result.engines_deferred is None
    m = load_bundle(bundle, verify=True)  # engines and timing cache are checksummed
    assert m.has("engine", "fp16") and m.has("engine", "int8") and m.has("timing-cache")
    assert m.artefact("engine", "fp16").trt_version == trt.__version__
    assert m.artefact("engine", "fp16").compute_capability
    info = m.data["artifacts"]["engine_fp16"]["tensorrt"]
    assert info["strongly_typed"] and info["builder_flags"] == []

    images = np.stack([make_scene(70_000 + i, m.tile)[0] for i in range(3)])
    ref = run_onnx(m.artefact("onnx", "fp32").path, images)
    for precision, threshold in (("fp16", 0.995), ("int8", 0.97)):
        got = _run_engine(m.artefact("engine", precision).path, images)
        assert (got["labels"] == ref["labels"]).mean() >= threshold, precision
