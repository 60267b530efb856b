"""Add TensorRT engines to an existing bundle, torch-free (`co2s-export --from-bundle B --engine fp16`).

Without an NVIDIA GPU nothing is built: the bundle is left complete (all ONNX) and the caller exits with
status 2 and one sentence saying where and how to build. With one, each engine is built from the bundle's
ONNX of that precision, written under a temporary name and renamed, and the manifest is rewritten
atomically with the engine's checksum and the builder/device record.
"""

from __future__ import annotations

from pathlib import Path

from co2s.errors import Co2SInputError
from co2s.runtime.manifest import artifact_record, load_manifest, write_manifest

from . import formats
from .tensorrt_build import build_engine, has_nvidia_gpu

NO_GPU_EXIT = 2


def no_gpu_message(bundle: Path, precisions: tuple[str, ...]) -> str:
    flags = " ".join(f"--engine {p}" for p in precisions)
    return (f"TensorRT engines are built on the target GPU, and this machine has none: copy {bundle} there and run "
            f"`co2s-export --from-bundle {bundle} {flags}`.")


def add_engines(bundle: str | Path, precisions, *, workspace_gib: float = 4.0, log=print):
    from .pipeline import ExportResult  # small module-level cycle avoided: pipeline imports us lazily too

    bundle = Path(bundle)
    precisions = formats.parse_precisions(precisions, "--engine")
    manifest = load_manifest(bundle)  # validates the schema and every checksum first
    missing = [p for p in precisions if not manifest.has(formats.get_format("onnx", p).key)]
    if missing:
        raise Co2SInputError(
            f"--engine {missing[0]}: the bundle {bundle} has no {missing[0]} ONNX to build from "
            f"(it has {', '.join(k for k in manifest.data['artifacts'] if k.startswith('onnx_'))}); re-export with "
            f"--precisions including {missing[0]}"
        )
    if not has_nvidia_gpu():
        return ExportResult(bundle, manifest.data, NO_GPU_EXIT, no_gpu_message(bundle, precisions))

    data = manifest.data
    cache = bundle / formats.TIMING_CACHE
    for p in precisions:
        onnx_fmt, eng_fmt = formats.get_format("onnx", p), formats.get_format("engine", p)
        record = build_engine(bundle / onnx_fmt.filename, bundle / eng_fmt.filename, precision=p, batch=data["batch"],
                              input_name=data["input"]["name"],
                              input_shape=tuple(1 if isinstance(d, str) else d for d in data["input"]["shape"]),
                              workspace_gib=workspace_gib, timing_cache=cache, log=log)
        data["artifacts"][eng_fmt.key] = artifact_record(bundle, eng_fmt.filename, "engine", precision=p,
                                                         tensorrt=record)
        data["artifacts"]["timing_cache"] = artifact_record(bundle, formats.TIMING_CACHE, "timing-cache")
        data["producer"]["tensorrt"] = record["version"]
        write_manifest(bundle, data)  # after each engine, so a later failure keeps the earlier ones valid
        log(f"  {eng_fmt.filename}: TensorRT {record['version']} on {record['device'].get('name')} "
            f"in {record['build_seconds']} s")
    return ExportResult(bundle, data, 0, "")
