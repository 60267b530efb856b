"""Stand-ins for the GPU libraries (TensorRT, pycuda, cuda-python), kept to the real API recorded in
tests/data/gpu_api.json (see api.py)."""
