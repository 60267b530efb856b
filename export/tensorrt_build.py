"""TensorRT engines from the bundle's typed ONNX, with the TensorRT Python API (10.3 on JetPack 6.2, 11.x).

Torch-free: a Jetson builds with `co2s-export --from-bundle BUNDLE --engine fp16` and only tensorrt installed.

* Strongly typed networks: precision comes from the ONNX (FP16 islands, Q/DQ), the builder sets shapes only.
  TensorRT 10.x and 11.x both have NetworkDefinitionCreationFlag.STRONGLY_TYPED (11.x removed BuilderFlag.FP16/
  INT8 and the calibrators, so there is no weakly typed way left to build there anyway); a TensorRT without the
  flag is refused with the version to install.
* Every failure TensorRT reports is checked: a nullptr from a factory (pybind11 raises TypeError, e.g. when CUDA
  cannot start), a None network or plan, add_optimization_profile's -1. A timing cache TensorRT refuses is
  skipped with a note, not fatal.
* One optimisation profile on the batch dim (min/opt/max from the manifest); H, W are static.
* A timing cache beside the bundle (timing.cache) makes rebuilds faster; workspace is capped.
* The plan is written as is: no metadata header (the manifest is the sidecar), so trtexec and Triton
  load it unchanged.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from co2s.errors import Co2SError, Co2SInputError
from co2s.files import atomic_file


class EngineBuildError(Co2SError):
    """TensorRT could not parse the ONNX or build the engine (the message says why)."""


def has_nvidia_gpu() -> bool:
    """Cheap, import-free probe: a CUDA-capable NVIDIA device node (desktop/server) or a Jetson iGPU."""
    if os.environ.get("CO2S_FORCE_NO_GPU") == "1":  # tests and dry runs on GPU machines
        return False
    dev = Path("/dev")
    return any((dev / n).exists() for n in ("nvidia0", "nvhost-ctrl-gpu", "nvgpu/igpu0/ctrl"))


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise Co2SInputError(
            f"--engine needs the TensorRT Python package on this GPU machine ({e}); install it with "
            "`pip install 'co2s[gpu]'` (or use the one JetPack ships: python3-libnvinfer)"
        ) from None
    return trt


def device_info() -> dict:
    """GPU name and compute capability without torch: pycuda, then cuda-python, then nvidia-smi, then Jetson."""
    info: dict = {"name": None, "compute_capability": None}
    try:
        import pycuda.driver as cuda

        cuda.init()
        d = cuda.Device(0)
        info.update(name=d.name(), compute_capability="{}.{}".format(*d.compute_capability()))
        return info
    except Exception:  # noqa: BLE001 - probing: any failure means "try the next probe"
        pass
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            info.update(name=name.strip("\x00"), compute_capability=f"{props.major}.{props.minor}")
            return info
    except Exception:  # noqa: BLE001 - probing: any failure means "try the next probe"
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                name, cc = [s.strip() for s in out[0].split(",")]
                info.update(name=name, compute_capability=cc)
                return info
        except Exception:  # noqa: BLE001 - probing: any failure means "try the next probe"
            pass
    model = Path("/proc/device-tree/model")
    if model.exists():  # Jetson: no nvidia-smi; Orin is SM 8.7
        name = model.read_text(errors="ignore").strip("\x00 \n")
        info.update(name=name, compute_capability="8.7" if "Orin" in name else None)
    return info


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    batch: dict,
    input_name: str,
    input_shape: tuple[int, ...],
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    builder_optimization_level: int | None = None,
    log=print,
) -> dict:
    """Build one plan; returns the record stored under artifacts.engine_<precision>.tensorrt."""
    trt = import_tensorrt()
    version = trt.__version__
    major = int(version.split(".")[0])
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if major < 10 or not hasattr(creation, "STRONGLY_TYPED"):
        raise EngineBuildError(
            f"TensorRT {version} cannot build strongly typed networks; install TensorRT 10.3 or newer "
            "(pip install 'co2s[gpu]'; JetPack 6.2 ships 10.3)"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except TypeError as e:  # pybind11's answer to a nullptr: the builder could not start
        raise EngineBuildError(
            f"TensorRT {version} could not create a builder ({e}); check that CUDA works here (nvidia-smi, or "
            "tegrastats on Jetson) and that no other process holds all GPU memory"
        ) from None
    network = builder.create_network(1 << int(creation.STRONGLY_TYPED))
    if network is None:
        raise EngineBuildError(f"TensorRT {version} could not create a network (see the TensorRT log above)")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # handles external data next to the file
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT {version} could not parse the ONNX: {'; '.join(errs[:5])}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if builder_optimization_level is not None:
        config.builder_optimization_level = builder_optimization_level

    lo, opt, hi = batch["min"], batch["opt"], batch["max"]
    if batch.get("dynamic"):
        profile = builder.create_optimization_profile()
        rest = tuple(input_shape[1:])
        profile.set_shape(input_name, (lo, *rest), (opt, *rest), (hi, *rest))
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(
                f"{onnx_path}: TensorRT {version} refused the batch profile {lo}/{opt}/{hi} for input "
                f"{input_name!r} (see the TensorRT log above)"
            )

    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # a cache from another GPU is ignored (ignore_mismatch); one TensorRT cannot read at all is skipped, not fatal
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
        log(f"TensorRT {version} did not take the timing cache; building without it (it is not updated)")
        timing_cache = None

    t0 = time.perf_counter()
    log(f"building TensorRT {version} {precision} engine from {onnx_path.name} (this takes minutes)...")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT {version} failed to build the {precision} engine (see log above)"
        )
    seconds = time.perf_counter() - t0
    with atomic_file(engine_path) as f:
        f.write(memoryview(plan))  # the plan as is: no metadata header
    if timing_cache is not None:
        data = config.get_timing_cache().serialize()
        with atomic_file(timing_cache) as f:
            f.write(memoryview(data))

    return {
        "version": version,
        "strongly_typed": True,
        "builder_flags": [],  # kept in the record: weakly typed builds (FP16/INT8 flags) are gone
        "workspace_gib": workspace_gib,
        "profile": {"min": lo, "opt": opt, "max": hi} if batch.get("dynamic") else None,
        "build_seconds": round(seconds, 1),
        "device": device_info(),
        "host": platform.machine(),
        "source_onnx": onnx_path.name,
    }
