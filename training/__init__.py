"""Training package: data, the three networks, evaluation, calibration and ONNX export.

It imports TensorFlow; the service never imports this package. Its image preprocessing is the
service's own `service.inference.preprocessing.preprocess`, so the two cannot disagree.
"""
