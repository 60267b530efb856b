"""Runtime stage: torch-free inference from a bundle (numpy + onnxruntime / TensorRT only)."""
