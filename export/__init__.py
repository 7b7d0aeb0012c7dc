"""The export stage (ONNX export and benchmarks), installed as ``sddpx_tp.export``."""
