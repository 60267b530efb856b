"""GPU presence comes from the CUDA driver, never from onnxruntime's provider list; a GPU provider that cannot start
is BackendUnavailable, so `--backend auto` goes ort-trt -> ort-cuda -> ort-cpu and says why. The onnxruntime-gpu and
CUDA-driver stand-ins (tests/fakes/ort.py, cuda_driver.py) fail the way the real ones do."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fakes import cuda_driver
from fakes import ort as fake_ort
from fakes.runtime import make_bundle, reference_outputs

from co2s.bundle import load_bundle
from co2s.runtime.backends import BackendUnavailable, gpu_probe, open_backend
from co2s.runtime.backends import ort as ort_backend
from co2s.runtime.backends.ort import OrtBackend


@pytest.fixture(autouse=True)
def _fresh_probe():
    gpu_probe.cuda_devices.cache_clear()
    yield
    gpu_probe.cuda_devices.cache_clear()


@pytest.fixture
def bundle(tmp_path):
    return load_bundle(make_bundle(tmp_path / "b", tile=32, num_classes=4))


def _tiles(n=2, tile=32):
    return np.random.default_rng(1).integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)


def test_the_cuda_device_is_asked_of_the_driver(monkeypatch, tmp_path):
    cuda_driver.install(monkeypatch, None)
    gpu = gpu_probe.cuda_devices()
    assert not gpu and gpu.count == 0 and "no NVIDIA driver (libcuda.so.1 not found)" in gpu.detail

    node = tmp_path / "nvidia0"
    node.touch()
    cuda_driver.install(monkeypatch, None, nodes=(str(node),))
    assert "exists but the NVIDIA driver library libcuda.so.1 cannot be loaded" in gpu_probe.cuda_devices().detail

    cuda_driver.install(monkeypatch, cuda_driver.Driver(init_error=100))
    gpu = gpu_probe.cuda_devices()
    assert not gpu and gpu.detail == "the CUDA driver cannot start: cuInit returned CUDA_ERROR_NO_DEVICE (100)"

    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=0))
    assert gpu_probe.cuda_devices() == gpu_probe.CudaDevices(0, "the CUDA driver sees no device", "13.0")

    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=2, version=12060))
    gpu = gpu_probe.cuda_devices()
    assert gpu and (gpu.count, gpu.driver) == (2, "12.6") and "2 CUDA device(s)" in gpu.detail

    monkeypatch.setenv("CO2S_FORCE_NO_GPU", "1")
    gpu_probe.cuda_devices.cache_clear()
    assert not gpu_probe.cuda_devices()


def test_the_driver_fake_refuses_what_the_c_api_refuses():
    import ctypes

    d = cuda_driver.Driver()
    with pytest.raises(cuda_driver.FakeApiError, match="byref"):
        d.cuDeviceGetCount(ctypes.c_int())  # not a pointer: memory corruption on the real library
    with pytest.raises(cuda_driver.FakeApiError, match="byref"):
        d.cuDriverGetVersion(ctypes.byref(ctypes.c_long()))
    n = ctypes.c_int(-1)
    assert d.cuDeviceGetCount(ctypes.byref(n)) == 3 and n.value == -1  # before cuInit: NOT_INITIALIZED
    with pytest.raises(AttributeError):
        d.cuDeviceGetName  # noqa: B018 - a function the fake does not have is missing, as on a CDLL


def test_onnxruntime_gpu_on_a_machine_without_a_gpu_is_not_a_gpu(monkeypatch, bundle, caplog):
    machine = fake_ort.Machine(cuda_libs=True, tensorrt_libs=True)  # lists every provider, as onnxruntime-gpu does
    fake_ort.install(monkeypatch, machine)
    cuda_driver.install(monkeypatch, None)
    with caplog.at_level(logging.INFO, logger="co2s.runtime"):
        be = open_backend(bundle, "auto", "fp32")
    assert be.name == "ort-cpu"
    assert [asked for asked, _ in machine.sessions] == [["CPUExecutionProvider"]]  # no GPU provider was tried
    assert "skipping ort-trt: onnxruntime has TensorrtExecutionProvider but there is no CUDA device" in caplog.text
    assert "skipping ort-cuda: onnxruntime has CUDAExecutionProvider but there is no CUDA device" in caplog.text
    with pytest.raises(BackendUnavailable, match=r"ort-cuda: no CUDA device \(no NVIDIA driver"):
        OrtBackend(bundle, "fp32", "ort-cuda")


def test_gpu_providers_without_their_libraries_fall_back_to_the_cpu_and_say_why(monkeypatch, bundle, caplog, capsys):
    machine = fake_ort.Machine(cuda_libs=False, tensorrt_libs=False)
    fake_ort.install(monkeypatch, machine)
    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=1))
    # our own check finds the TensorRT 10 libraries (onnxruntime's TensorRT provider still fails to load them)
    monkeypatch.setattr(ort_backend, "ort_tensorrt_libraries", lambda: None)
    with caplog.at_level(logging.INFO, logger="co2s.runtime"):
        be = open_backend(bundle, "auto", "fp32")
    assert be.name == "ort-cpu" and be.providers == ("CPUExecutionProvider",)
    assert machine.preloads == 2  # onnxruntime.preload_dlls before each GPU provider
    assert [got for _, got in machine.sessions] == [["CPUExecutionProvider"]] * 3
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert skipped[0].startswith(
        "skipping ort-trt: ort-trt: onnxruntime did not enable TensorrtExecutionProvider, the session would run on "
        "CPUExecutionProvider (Failed to load library libonnxruntime_providers_tensorrt.so with error: "
        "libnvinfer.so.10: cannot open shared object file"
    )
    assert skipped[1].startswith(
        "skipping ort-cuda: ort-cuda: onnxruntime did not enable CUDAExecutionProvider, the session would run on "
        "CPUExecutionProvider (onnxruntime's log names the library it could not load); pip install 'co2s[gpu]'"
    )
    assert len(skipped) == 2
    out = capsys.readouterr()
    assert "EP Error" not in out.out and out.out == ""  # onnxruntime's fallback chatter never reaches stdout
    assert "libcublasLt.so.13" in out.err  # onnxruntime's own log of the CUDA provider, as it writes it
    x = _tiles()
    got = be.run(x)
    assert np.array_equal(got["labels"], reference_outputs(x, 4)["labels"])


def test_a_gpu_provider_that_cannot_start_is_unavailable(monkeypatch, bundle):
    machine = fake_ort.Machine(cuda_libs=True, start_error=fake_ort.RuntimeException(fake_ort.NO_DEVICE_ERROR))
    fake_ort.install(monkeypatch, machine)
    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=1))
    with pytest.raises(BackendUnavailable) as e:
        open_backend(bundle, "ort-cuda", "fp32")
    assert str(e.value).startswith(
        "ort-cuda: onnxruntime could not start CUDAExecutionProvider (Exception during initialization: "
    )
    assert "CUDA failure 100: no CUDA-capable device is detected" in str(e.value)


def test_ort_trt_says_which_tensorrt_library_is_missing(monkeypatch, bundle, tmp_path):
    fake_ort.install(monkeypatch, fake_ort.Machine(cuda_libs=True, tensorrt_libs=True))
    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=1))
    monkeypatch.setattr(gpu_probe, "ORT_TENSORRT_LIBRARIES", ("libco2s-absent-nvinfer.so.10",))
    with pytest.raises(BackendUnavailable) as e:
        OrtBackend(bundle, "fp32", "ort-trt")
    msg = str(e.value)
    assert msg.startswith("ort-trt: onnxruntime's TensorRT provider needs TensorRT 10 and libco2s-absent-nvinfer.so.10")
    assert "cannot open shared object file" in msg and "pip install 'co2s[gpu]'" in msg


def test_the_pip_tensorrt_wheel_copy_is_found(monkeypatch, tmp_path):
    """The pip wheel's libraries sit in site-packages/tensorrt_libs, on no library path: the probe loads them from
    there (a real shared library under a TensorRT-like soname), and reports what the loader says of a bad one."""
    import _ctypes
    import shutil

    pkg = tmp_path / "tensorrt_libs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(_ctypes.__file__, pkg / "libco2s-fake.so.10")
    (pkg / "libco2s-bad.so.10").write_bytes(b"not an ELF file")
    assert gpu_probe.load_library("libco2s-fake.so.10") is not None  # on no library path
    monkeypatch.syspath_prepend(str(tmp_path))
    assert gpu_probe.tensorrt_wheel_library("libco2s-fake.so.10") == pkg / "libco2s-fake.so.10"
    assert gpu_probe.load_library("libco2s-fake.so.10") is None
    why = gpu_probe.load_library("libco2s-bad.so.10")
    assert why is not None and str(pkg / "libco2s-bad.so.10") in why
    assert gpu_probe.tensorrt_wheel_library("libnvinfer.so.99") is None


def test_the_runtime_matrix_asks_the_driver_too(monkeypatch, bundle):
    """benchmarks/runtime_matrix.py: ort-cuda rows only where a CUDA device is, whatever onnxruntime lists."""
    import importlib.util

    from conftest import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("runtime_matrix", REPO_ROOT / "benchmarks" / "runtime_matrix.py")
    matrix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(matrix)
    fake_ort.install(monkeypatch, fake_ort.Machine())  # onnxruntime-gpu: lists the CUDA provider
    cuda_driver.install(monkeypatch, None)
    notes: list[str] = []
    assert matrix.gpu_configs(bundle, notes) == []
    assert (
        notes[0]
        == "no ort-cuda rows: no CUDA device (no NVIDIA driver (libcuda.so.1 not found) and no NVIDIA device node)"
    )
    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=1))
    assert matrix.gpu_configs(bundle, []) == [("ort-cuda", "fp32")]
