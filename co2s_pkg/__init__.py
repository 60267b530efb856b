"""co2s: Co2S semi-supervised remote-sensing segmentation, from training to on-board inference.

`co2s.train` (torch) -> checkpoint -> `co2s.export` (torch, onnx) -> bundle -> `co2s.runtime` (numpy + onnxruntime/TensorRT).
"""

__version__ = "0.1.0"
