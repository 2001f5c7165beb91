"""Training package: data, the three networks, evaluation, calibration and ONNX export.

Training runs on any Keras backend (TensorFlow here; JAX or PyTorch on a GPU machine); the
export needs TensorFlow (tf2onnx). The service never imports this package. Its image
preprocessing is the service's own `xray.contract.preprocessing.preprocess`, so the two
cannot disagree.
"""
