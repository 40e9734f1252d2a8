"""The model toolchain: export, optimize, quantize, evaluate.

Needs the ``export`` extra (torch, onnx, onnxslim); everything heavy is imported inside functions so the
runtime never pays for it.
"""
