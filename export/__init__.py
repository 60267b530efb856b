"""Export stage: checkpoint -> bundle (ONNX per precision, TensorRT engines, manifest). See README.md here.

Modules, one job each:
  deploy        the deploy module: constants folded (normalisation, class vectors, RoPE), fused outputs
  onnx_export   dynamo export + constant folding of the weights + checker + shape inference
  audit         TensorRT 10 operator / control-flow audit (vendored table tensorrt10_onnx_ops.tsv)
  precision     FP16 with FP32 islands; INT8 Q/DQ (onnxruntime or nvidia-modelopt)
  calibration   calibration / parity tiles (folder or synthetic)
  parity        agreement / mIoU metrics (numpy + onnxruntime)
  bundle        atomic bundle folder
  options       what an export is asked (ExportOptions), returns (ExportResult), fails with (ExportCheckError)
  pipeline      the export as one API call (ExportOptions -> ExportResult)
  engines       add TensorRT engines to a bundle (torch-free)
  tensorrt_build  the TensorRT 10.3 / 11.x builder (torch-free)
  formats       the one table of formats
  triton        Triton model repository (torch-free)
  cli           `co2s-export`
"""
