"""TensorRT engines from the tiny bundle: only where a GPU, the tensorrt package and CUDA torch exist."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from co2s.export.tensorrt_build import has_nvidia_gpu

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed: engines are built on the target GPU (co2s[gpu])"
)
pytestmark = pytest.mark.skipif(
    not has_nvidia_gpu(), reason="no NVIDIA GPU: TensorRT engines are built on the target device"
)


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


def test_engines_build_strongly_typed_and_agree_with_onnx(tmp_path):
    from _export_helpers import tiny_bundle

    from co2s.bundle import load_bundle
    from co2s.export.engines import add_engines
    from co2s.export.parity import run_onnx
    from co2s.train.data import make_scene

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    result = add_engines(bundle, ("fp16", "int8"), workspace_gib=2.0, log=lambda *_: None)
    assert result.engines_deferred is None
    m = load_bundle(bundle, verify=True)  # engines and timing cache are checksummed
    assert m.has("engine", "fp16") and m.has("engine", "int8") and m.has("timing-cache")
    assert m.artefact("engine", "fp16").trt_version == trt.__version__
    assert m.artefact("engine", "fp16").compute_capability
    info = m.data["artifacts"]["engine_fp16"]["tensorrt"]
    assert info["strongly_typed"] or info["builder_flags"]

    images = np.stack([make_scene(70_000 + i, m.tile)[0] for i in range(3)])
    ref = run_onnx(m.artefact("onnx", "fp32").path, images)
    for precision, threshold in (("fp16", 0.995), ("int8", 0.97)):
        got = _run_engine(m.artefact("engine", precision).path, images)
        assert (got["labels"] == ref["labels"]).mean() >= threshold, precision
