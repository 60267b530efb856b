"""Runtime stage: torch-free inference from a bundle (numpy + onnxruntime / TensorRT only).

    from co2s.runtime import load_bundle, open_backend, run_inference, predict_array

    bundle = load_bundle("bundles/potsdam")
    backend = open_backend(bundle)                       # auto: TensorRT engine > ORT TensorRT/CUDA EP > ORT CPU
    run_inference(bundle, backend, ["scene.tif", "tiles/"], "out/")
    labels = predict_array(backend, rgb_uint8)["labels"]  # in memory, same tiling and stitching
    for r in stream(bundle, "rtsp://camera/live"):        # onboard loop: newest frame, drops counted
        r.labels, r.latency_s, r.dropped

One backend serves several threads at once (`run`, `predict_array`, pipeline runs): see README, "Threads and
long runs". Names are resolved lazily, so importing one module of the runtime does not load them all.
"""

from __future__ import annotations

_API = {
    "load_bundle": "co2s.bundle",
    "Bundle": "co2s.bundle",
    "open_backend": ".backends",
    "Backend": ".backends",
    "run_inference": ".pipeline",
    "predict_array": ".pipeline",
    "InferOptions": ".pipeline",
    "InferencePipeline": ".pipeline",
    "InputOptions": ".io",
    "StageProfiler": ".profiler",
    "stream": ".streaming",
    "FrameStream": ".streaming",
    "StreamOptions": ".streaming",
    "StreamResult": ".streaming",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
