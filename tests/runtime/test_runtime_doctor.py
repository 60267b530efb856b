"""`co2s-bench --doctor`: per backend, ready or why not and the next step; a GPU only where the CUDA driver sees
one; exit 0. Machines are made of the recorded-API stand-ins (onnxruntime-gpu, libcuda, TensorRT and pycuda)."""

from __future__ import annotations

import types

import pytest
from fakes import cuda_driver
from fakes import ort as fake_ort
from fakes import tensorrt as fake_trt
from fakes.runtime import make_bundle

from co2s.runtime import doctor
from co2s.runtime.backends import gpu_probe

CUBLAS_MISSING = "libcublasLt.so.13: cannot open shared object file: No such file or directory"


@pytest.fixture(autouse=True)
def _fresh_probe():
    gpu_probe.cuda_devices.cache_clear()
    yield
    gpu_probe.cuda_devices.cache_clear()


def _rows(out: str) -> dict[str, str]:
    return {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0] in ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu")
    }


def test_onnxruntime_gpu_on_a_cpu_machine(run_cli, monkeypatch):
    fake_ort.install(monkeypatch, fake_ort.Machine(cuda_libs=True, tensorrt_libs=True))  # lists every provider
    cuda_driver.install(monkeypatch, None)
    monkeypatch.setattr(doctor, "has_module", lambda name: False)
    r = run_cli("co2s-bench", ["--doctor"])
    assert r.code == 0, r.err
    assert "CUDA device: none: no NVIDIA driver (libcuda.so.1 not found) and no NVIDIA device node" in r.out
    rows = _rows(r.out)
    assert rows["tensorrt"].split()[1] == "no" and "TensorRT Python package is not installed" in rows["tensorrt"]
    for name, provider in (("ort-trt", "TensorrtExecutionProvider"), ("ort-cuda", "CUDAExecutionProvider")):
        assert rows[name].split()[1] == "no"
        assert f"has {provider}, but there is no CUDA device (no NVIDIA driver" in rows[name]
    assert rows["ort-cpu"].split()[1] == "ready"
    assert r.out.count("next: run it on the machine with the NVIDIA GPU; here use --backend ort-cpu") == 2
    assert "first ready backend: ort-cpu" in r.out


def test_a_gpu_machine_with_a_missing_cuda_library(run_cli, monkeypatch, tmp_path):
    fake_ort.install(monkeypatch, fake_ort.Machine(cuda_libs=False, tensorrt_libs=True))
    cuda_driver.install(monkeypatch, cuda_driver.Driver(count=1, version=13000))
    fake_trt.install(monkeypatch)  # TensorRT 10.3 on an Orin (sm_87), through pycuda
    monkeypatch.setattr(doctor, "has_module", lambda name: True)
    monkeypatch.setattr(doctor, "ort_tensorrt_libraries", lambda: None)
    monkeypatch.setattr(doctor, "ort_provider_library", lambda m, p: CUBLAS_MISSING if p == "cuda" else None)
    bundle = make_bundle(tmp_path / "b", precisions=("fp32", "int8"))
    r = run_cli("co2s-bench", ["--doctor", bundle])
    assert r.code == 0, r.err
    assert "CUDA device: 1 device(s): 1 CUDA device(s), driver for CUDA 13.0" in r.out
    rows = _rows(r.out)
    assert rows["tensorrt"].split()[1] == "ready" and "TensorRT 10.3.0 on Orin (sm_87)" in rows["tensorrt"]
    assert rows["ort-trt"].split()[1] == "ready"
    assert rows["ort-cuda"].split()[1] == "no" and f"its provider library cannot load: {CUBLAS_MISSING}" in r.out
    assert "no TensorRT engine (co2s-export --from-bundle B --engine fp16 builds one here)" in r.out
    assert r.out.count("runs onnx fp32") == 2 and r.out.count("runs onnx int8") == 2  # ort-trt and ort-cpu
    assert "first ready backend: tensorrt" in r.out


def test_both_onnxruntimes_installed_is_named(monkeypatch):
    monkeypatch.setattr(doctor, "installed", lambda: {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"})
    cuda_driver.install(monkeypatch, None)
    out = doctor.render(*doctor.doctor())
    assert "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files" in out


def test_the_provider_library_check_reports_what_the_loader_says(tmp_path):
    import _ctypes
    import shutil

    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    module = types.ModuleType("onnxruntime")
    module.__file__ = str(tmp_path / "onnxruntime" / "__init__.py")
    assert gpu_probe.ort_provider_library(module, "cuda") == (
        "this onnxruntime has no libonnxruntime_providers_cuda.so (a CPU build)"
    )
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"not an ELF file")
    why = gpu_probe.ort_provider_library(module, "cuda")
    assert why is not None and "libonnxruntime_providers_shared.so" in why  # loaded first: missing here
    shutil.copy(_ctypes.__file__, capi / "libonnxruntime_providers_shared.so")  # a real shared library
    why = gpu_probe.ort_provider_library(module, "cuda")
    assert why is not None and why.startswith("libonnxruntime_providers_cuda.so: ")  # what the loader said of it
    shutil.copy(_ctypes.__file__, capi / "libonnxruntime_providers_cuda.so")
    assert gpu_probe.ort_provider_library(module, "cuda") is None


def test_bench_still_needs_a_bundle_without_doctor(run_cli):
    r = run_cli("co2s-bench", [])
    assert r.code == 2 and "Missing argument 'BUNDLE'" in r.err
