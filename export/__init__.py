"""Export stage: checkpoint -> bundle (ONNX per precision, TensorRT engines, manifest)."""
