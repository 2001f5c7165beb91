"""Chest X-ray triage service: ONNX models behind a FastAPI API. Never imports TensorFlow."""

__version__ = "0.1.0"
