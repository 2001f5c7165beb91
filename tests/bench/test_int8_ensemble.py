"""The float32 twin of a QDQ model: the float network back, with the ReLUs the quantizer folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.int8_ensemble import float_twin
from training.quantize import quantize_int8


def _float_model(path: Path) -> None:
    """image (n, 16, 16, 1) -> conv -> relu -> conv -> relu -> mean -> logits, like our exports."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.2, (8, 1, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 8).astype(np.float32),
        "dense": rng.normal(0, 0.5, (8, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="model/transpose"),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="model/conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="model/relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="model/conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="model/relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="model/gap"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="model/flatten"),
        helper.make_node("MatMul", ["features", "dense"], ["logits"], name="model/logits/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 16, 16, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_float_twin_recovers_the_float_network_from_its_int8_copy(tmp_path: Path) -> None:
    original, int8, twin = tmp_path / "f.onnx", tmp_path / "q.onnx", tmp_path / "t.onnx"
    _float_model(original)
    rng = np.random.default_rng(1)
    quantize_int8(original, int8, rng.integers(0, 256, (16, 16, 16), dtype=np.uint8))
    quantized_ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in quantized_ops
    assert "Relu" not in quantized_ops  # the quantizer folds them into uint8 ranges

    float_twin(int8, twin)

    ops = [node.op_type for node in onnx.load(str(twin)).graph.node]
    assert "QuantizeLinear" not in ops
    assert "DequantizeLinear" not in ops
    # Every uint8 range starting at 0 becomes a Relu: the two folded ones, and no-ops on tensors
    # that cannot be negative (the image, the pooled ReLU outputs).
    assert ops.count("Relu") >= 2
    images = rng.integers(0, 256, (8, 16, 16, 1)).astype(np.float32)

    def logits(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(["logits"], {"image": images})[0])

    expected = logits(original)
    # Only the weights' INT8 rounding separates the twin from the original float network.
    np.testing.assert_allclose(logits(twin), expected, atol=0.02 * np.abs(expected).max())
    assert not np.allclose(logits(int8), logits(twin), atol=1e-6)  # activations are not quantized
