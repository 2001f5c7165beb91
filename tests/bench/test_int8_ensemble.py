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

    def on_the_grid(shape: tuple[int, ...]) -> np.ndarray:
        # Per output channel, multiples of a power of two reaching +-64 steps: exactly what 7-bit
        # per-channel quantization represents, so that the twin can be compared to the float
        # network without the weights' rounding in the way.
        steps = rng.integers(-64, 65, shape)
        steps[:, 0, 0, 0] = 64
        scale = 2.0 ** rng.integers(-9, -6, (shape[0], 1, 1, 1))
        return (steps * scale).astype(np.float32)

    weights = {
        "w1": on_the_grid((8, 1, 3, 3)),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": on_the_grid((8, 8, 3, 3)),
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
    quantized = onnx.load(str(int8)).graph
    quantized_ops = {node.op_type for node in quantized.node}
    assert "QuantizeLinear" in quantized_ops
    assert "Relu" not in quantized_ops  # the quantizer folds them into uint8 ranges
    # 7-bit weights (reduce_range): no CPU's 8-bit dot product can saturate on them.
    weights = [
        numpy_helper.to_array(item) for item in quantized.initializer if item.data_type == TensorProto.INT8
    ]
    assert weights
    assert all(int(w.min()) >= -64 and int(w.max()) <= 64 for w in weights)

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
    # The weights are on the grid, so only the biases' int32 rounding separates the two.
    np.testing.assert_allclose(logits(twin), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert not np.allclose(logits(int8), logits(twin), atol=1e-6)  # activations are not quantized
