"""Tools around a model.

Benchmarks (parameters, multiply-adds, latency) and ONNX export with its check.
"""
