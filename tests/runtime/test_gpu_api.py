"""The recorded real GPU-library API (tests/data/gpu_api.json) holds the fakes and our source to it: a fake member
the real API lacks, a looser fake signature, or a use in our code of something the real API does not have, fails
here. The file is written by scripts/record_gpu_api.py (not run by the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from fakes.api import Api, Fake, FakeApiError, FakeModule, api_keys, bind, problems, recorded
from fakes.gpu import Gpu, cudart_module, pycuda_module
from fakes.ort import Machine, onnxruntime_module
from fakes.tensorrt import TENSORRT_KEYS, tensorrt_module
from fakes.usage import check_files

SOURCES = {  # file -> how many uses of the GPU libraries the checker must find there (it cannot go blind)
    "runtime/backends/tensorrt.py": 60,
    "export/tensorrt_build.py": 30,
    "export/engines.py": 0,
    "runtime/backends/ort.py": 20,
    "runtime/doctor.py": 5,
}


def test_the_recorded_api_covers_the_supported_versions():
    apis = recorded()["apis"]
    assert [k.split(".")[0] for k in api_keys("tensorrt")] == ["tensorrt-10", "tensorrt-11"]
    assert api_keys("pycuda") and api_keys("onnxruntime") and len(api_keys("cudart")) == 2
    for key in api_keys("tensorrt"):
        a = Api(key)
        assert a.member("IExecutionContext", "execute_async_v3")["signatures"][0]["returns"] == "bool"
        assert a.member("IExecutionContext", "set_input_shape")["signatures"][0]["returns"] == "bool"
        assert a.member("IBuilderConfig", "add_optimization_profile")["signatures"][0]["returns"] == "int"
        assert a.member("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") is not None  # 10.3 and 11.x alike
    assert Api(TENSORRT_KEYS[-1]).member("BuilderFlag", "FP16") is None  # gone in 11
    stream = Api(api_keys("pycuda")[-1]).classes["Stream"]["members"]
    assert "handle" in stream and not {"begin_capture", "end_capture"} & set(stream)  # no graph API in pycuda
    for key in api_keys("cudart"):
        assert {"cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch"} <= set(
            apis[key]["functions"]
        )


def _all_fakes() -> list[tuple[Api, type]]:
    """Every bound fake class built for every recorded version (module attributes and the classes behind them)."""
    found: dict[type, Api] = {}
    for key in TENSORRT_KEYS:
        gpu = Gpu()
        for mod in (tensorrt_module(key, gpu), pycuda_module(gpu), cudart_module(gpu)):
            del mod
    onnxruntime_module(Machine())
    todo = list(Fake.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__dict__.get("_api") is not None and cls._real is not None:
            found[cls] = cls._api
    return [(api, cls) for cls, api in found.items()]


def test_every_fake_keeps_to_the_recorded_api():
    fakes = _all_fakes()
    names = {(api.family, cls._real) for api, cls in fakes}
    for want in ("ICudaEngine", "IExecutionContext", "Runtime", "Builder", "IBuilderConfig", "OnnxParser"):
        assert ("tensorrt", want) in names
    for want in ("Stream", "Event", "Context", "Device", "DeviceAllocation"):
        assert ("pycuda", want) in names
    assert ("cudart", "cudaGraphExec_t") in names
    for want in ("InferenceSession", "SessionOptions", "NodeArg"):
        assert ("onnxruntime", want) in names
    for api, cls in fakes:
        assert problems(api, cls) == [], cls


API = Api(TENSORRT_KEYS[0])


@pytest.mark.parametrize(
    "body, why",
    [
        ({"begin_capture": lambda self: None}, "no such member"),  # a member the real class lacks
        ({"execute_async_v3": lambda self, *args: True}, r"\*args"),
        ({"execute_async_v3": lambda self, stream_handle=0: True}, "a default for stream_handle"),
        ({"execute_async_v3": lambda self, stream: True}, "parameter names stream"),
        ({"execute_async_v3": lambda self, stream_handle, extra: True}, "2 parameters"),
        ({"engine": lambda self: None}, "the real member is a property"),
        ({"engine": property(lambda self: None, lambda self, v: None)}, "writable, the real one is read-only"),
    ],
)
def test_a_looser_fake_is_refused(body, why):
    cls = type("Loose", (Fake,), {"_real": "IExecutionContext", **body})
    with pytest.raises(FakeApiError, match=why):
        bind(API, cls)


def test_bound_fakes_check_every_call_and_return():
    class Ctx(Fake, real="IExecutionContext"):
        def set_input_shape(self, name, shape):
            return self._answer

        def set_tensor_address(self, name, memory):
            return True

    Ctx = bind(API, Ctx)
    c = Ctx._make()
    c._answer = True
    assert c.set_input_shape("images", (2, 32, 32, 3)) is True
    assert c.set_input_shape(name="images", shape=[2, 32, 32, 3]) is True
    with pytest.raises(FakeApiError, match="refuses this call"):
        c.set_input_shape("images")  # a parameter missing
    with pytest.raises(FakeApiError, match="refuses this call"):
        c.set_tensor_address("images", "0x1000")  # an address must be an int
    c._answer = None
    with pytest.raises(FakeApiError, match="returns bool"):
        c.set_input_shape("images", (2, 32, 32, 3))  # the real one never returns None here
    with pytest.raises(FakeApiError, match="cannot be set"):
        c.profiler_name = "x"  # not a member of the real class
    mod = FakeModule(API, "tensorrt")
    with pytest.raises(FakeApiError, match="has no"):
        mod.Graph = object
    mod.nptype = lambda trt_type: np.float32
    with pytest.raises(FakeApiError, match="refuses this call"):
        mod.nptype()


def test_our_source_uses_only_what_the_real_api_has():
    report = check_files([REPO_ROOT / f for f in SOURCES])
    assert report.missing == []
    for f, least in SOURCES.items():
        n = sum(u.file == Path(f).name for u in report.uses)
        assert n >= least, f"{f}: the checker followed {n} uses of the GPU libraries, expected at least {least}"


def test_the_source_check_finds_what_the_real_api_lacks(tmp_path):
    src = tmp_path / "uses.py"
    src.write_text(
        "def graphs(cuda, trt):\n"
        "    stream = cuda.Stream()\n"
        "    stream.begin_capture()\n"  # pycuda has no stream capture
        "    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))\n"
        "    engine = runtime.deserialize_cuda_engine(b'')\n"
        "    engine.get_binding_shape(0)\n"  # removed in TensorRT 10
        "    if hasattr(trt.BuilderFlag, 'FP16'):\n"
        "        trt.BuilderFlag.FP16\n"  # gone in 11, but guarded
        "    trt.BuilderFlag.INT8\n"  # gone in 11, unguarded
    )
    missing = check_files([src]).missing
    assert any("Stream.begin_capture" in m and ":3:" in m for m in missing), missing
    assert any("ICudaEngine.get_binding_shape" in m and ":6:" in m for m in missing), missing
    assert any("BuilderFlag.INT8" in m and "tensorrt-11" in m for m in missing), missing
    assert not any("FP16" in m for m in missing), missing
