"""A Triton Inference Server model repository for a bundle (torch-free).

    DIR/<model>/config.pbtxt
    DIR/<model>/1/model.plan    (TensorRT engine, when the bundle has one: fp16 > int8 > fp32)
    DIR/<model>/1/model.onnx    (otherwise: the FP32 ONNX for the onnxruntime backend)

The batch dimension is Triton's (max_batch_size > 0 => `dims` omit it), with dynamic batching at the
profile's opt size and one GPU instance. The text is validated by parsing it into Triton's own
ModelConfig protobuf (`tritonclient[grpc]`) when that is installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from co2s.bundle import Bundle
from co2s.bundle.formats import ENGINE, ONNX
from co2s.errors import Co2SInputError
from co2s.files import commit_files, remove_path, remove_stale_temps, temp_name

_DTYPES = {
    "uint8": "TYPE_UINT8",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
}


def _tensor_block(t: dict, batched: bool) -> str:
    dims = t["shape"][1:] if batched else [1 if isinstance(d, str) else d for d in t["shape"]]
    return (
        f'  {{\n    name: "{t["name"]}"\n    data_type: {_DTYPES[t["dtype"]]}\n'
        f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]\n  }}"
    )


def config_text(bundle: Bundle, model_name: str, platform: str, instances: int = 1) -> str:
    max_batch = bundle.batch.max
    lines = [f'name: "{model_name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch}"]
    lines.append("input [\n" + _tensor_block(bundle.data["input"], True) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor_block(o, True) for o in bundle.data["outputs"]) + "\n]")
    if max_batch > 1:
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {bundle.batch.opt} ]\n"
            f"  max_queue_delay_microseconds: 100\n}}"
        )
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_AUTO"
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    lines.append("version_policy: { latest: { num_versions: 1 } }")
    classes = ",".join(bundle.classes).replace('"', "'")
    lines.append(f'parameters: {{\n  key: "co2s_classes"\n  value: {{ string_value: "{classes}" }}\n}}')
    return "\n".join(lines) + "\n"


def validate_config(text: str) -> bool:
    """Parse with Triton's ModelConfig protobuf. Returns False when tritonclient is not installed."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return False
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ValueError(f"generated config.pbtxt does not parse as a Triton ModelConfig: {e}") from None
    return True


def write_triton_repo(bundle: Bundle, repo: Path, *, model_name: str | None = None, force: bool = False) -> dict:
    """Write (or replace) one model in a Triton repository; returns what was written."""
    repo = Path(repo)
    name = model_name or f"co2s_{bundle.data['dataset']['name']}".replace("-", "_")
    for precision in ("fp16", "int8", "fp32"):
        if bundle.has(ENGINE, precision):
            art, platform, fname = bundle.artefact(ENGINE, precision), "tensorrt_plan", "model.plan"
            break
    else:
        art, platform, fname, precision = bundle.artefact(ONNX, "fp32"), "onnxruntime_onnx", "model.onnx", "fp32"
    source = art.path
    model_dir = repo / name
    if model_dir.exists() and any(model_dir.iterdir()) and not force:
        raise Co2SInputError(f"--triton-repo: {model_dir} already exists and is not empty (use --force to replace it)")
    text = config_text(bundle, name, platform)
    validated = validate_config(text)
    remove_stale_temps(repo, name)  # what a killed earlier write of this model left
    tmp = temp_name(model_dir)
    try:
        (tmp / "1").mkdir(parents=True)
        (tmp / "config.pbtxt").write_text(text)
        try:
            os.link(source, tmp / "1" / fname)  # same filesystem: no copy of the (large) model file
        except OSError:
            shutil.copy2(source, tmp / "1" / fname)
        for data in bundle.companions(art):  # ONNX external weights travel with it
            shutil.copy2(data.path, tmp / "1" / data.path.name)
        commit_files([(tmp, model_dir)])  # a previous model folder (--force) is replaced in one rename
    except BaseException:
        remove_path(tmp)
        raise
    return {"path": str(model_dir), "platform": platform, "precision": precision, "validated": validated}
