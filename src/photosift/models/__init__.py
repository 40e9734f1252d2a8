"""Models: cards (what a model does and expects), the registry (where models live), ONNX Runtime sessions,
and the output handler of each task."""
