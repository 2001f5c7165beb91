"""Fitting the input check: the features output, the statistics, the threshold, the non-chest kinds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from training import input_check, non_chest
from xray.contract.input_check import FEATURES_OUTPUT


def _head_model(path: Path, *, with_head: bool = True) -> None:
    """image (n, 4, 4, 2) → GAP → MatMul → Add → logits, like an exported network's head."""
    nodes = [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[1, 2], keepdims=0)]
    if with_head:
        nodes += [
            helper.make_node("MatMul", ["pooled", "kernel"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["logits"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["pooled"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 4, 4, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", None])],
        initializer=[
            helper.make_tensor("kernel", TensorProto.FLOAT, [2, 3], [1, 0, -1, 0, 2, 1]),
            helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.5, 0, -0.5]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def test_the_pooled_features_become_an_output_and_the_logits_stay_bit_for_bit(tmp_path: Path) -> None:
    path = tmp_path / "head.onnx"
    _head_model(path)
    images = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
    (before,) = ort.InferenceSession(str(path)).run(["logits"], {"image": images})
    assert input_check.expose_features(path)
    assert not input_check.expose_features(path)  # already there: the file is left alone
    logits, features = ort.InferenceSession(str(path)).run(["logits", FEATURES_OUTPUT], {"image": images})
    np.testing.assert_array_equal(logits, before)
    np.testing.assert_allclose(features, images.mean(axis=(1, 2)), rtol=1e-6)


def test_a_graph_without_a_linear_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "headless.onnx"
    _head_model(path, with_head=False)
    with pytest.raises(ValueError, match="no MatMul/Gemm"):
        input_check.expose_features(path)


def _gaussian(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, count)
    centres = np.asarray([[0.0] * 10, [3.0] + [0.0] * 9, [0.0, 3.0] + [0.0] * 8])
    scales = np.linspace(2.0, 0.1, 10)  # a few strong directions, many weak ones
    return (centres[labels] + rng.normal(size=(count, 10)) * scales).astype(np.float32), labels


def test_a_fitted_view_scores_its_own_kind_near_zero_and_far_points_high() -> None:
    rng = np.random.default_rng(1)
    train, labels = _gaussian(rng, 2000)
    val, _ = _gaussian(rng, 500)
    model = input_check.fit_view(train, labels, val, components=3)
    assert model.components.shape == (10, 3)
    assert model.residual_variance > 0
    z = model.z_score(val)
    assert abs(float(np.median(z))) < 1e-6  # the validation median is the centre of the z-scores
    # Off along a weak direction: the residual term sees what the 3 components leave out.
    weak = np.zeros((1, 10), np.float32)
    weak[0, 9] = 10.0
    assert float(model.z_score(weak)[0]) > float(np.quantile(z, 0.999))
    without_residual = replace(model, residual_variance=0.0)
    assert float(without_residual.distance(weak)[0]) < 0.1  # the 3 components barely see it


def test_the_threshold_lets_at_least_the_pass_rate_of_validation_through() -> None:
    rng = np.random.default_rng(2)
    train, labels = _gaussian(rng, 1500)
    val, _ = _gaussian(rng, 301)
    views = {"a": {"features": train}, "b": {"features": train * 2}}
    check = input_check.fit_input_check(
        views, labels, {"a": {"features": val}, "b": {"features": val * 2}}, components=4, pass_rate=0.99
    )
    passed = check.scores({"a": {"features": val}, "b": {"features": val * 2}}) <= check.threshold
    assert passed.mean() >= 0.99
    assert passed.mean() < 1.0  # the threshold is a real one, not above every validation score


def test_the_fitted_check_averages_the_two_highest_views_and_its_threshold_is_of_that_score() -> None:
    rng = np.random.default_rng(3)
    train, labels = _gaussian(rng, 1500)
    val, _ = _gaussian(rng, 301)
    names = ("a", "b", "c")
    check = input_check.fit_input_check(
        {name: {"features": train} for name in names}, labels, {name: {"features": val} for name in names}
    )
    assert check.highest_views == input_check.DEFAULT_HIGHEST_VIEWS == 2
    # One view fooled: the image is a validation image there and far out in the two others.
    far = np.full((1, 10), 12.0, np.float32)
    image = {"a": {"features": val[:1]}, "b": {"features": far}, "c": {"features": far}}
    z_far = float(check.models["b"]["features"].z_score(far)[0])
    assert check.scores(image)[0] == pytest.approx(z_far)
    passed = check.scores({name: {"features": val} for name in names}) <= check.threshold
    assert 0.98 <= passed.mean() < 1.0


def test_energy_is_low_where_one_class_fits_and_the_auroc_counts_ties_as_half() -> None:
    confident, unsure = np.asarray([[9.0, 0.0, 0.0]]), np.asarray([[0.1, 0.0, 0.05]])
    assert input_check.energy(confident)[0] < input_check.energy(unsure)[0]
    assert input_check.roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert input_check.roc_auc([1.0], [1.0]) == 0.5


@pytest.mark.parametrize("kind", sorted(non_chest.KINDS))
def test_every_non_chest_kind_is_an_8bit_gray_image(kind: str) -> None:
    chest = np.random.default_rng(3).integers(0, 256, (300, 260), dtype=np.uint8)
    images = non_chest.make(kind, 3, [chest], seed=4)
    assert len(images) == 3
    for image in images:
        assert image.dtype == np.uint8
        assert image.ndim == 2
    assert non_chest.make(kind, 3, [chest], seed=4)[1].tobytes() == images[1].tobytes()  # seeded
