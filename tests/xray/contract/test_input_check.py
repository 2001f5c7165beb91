"""The input check: its distance, its stored statistics, and how a predictor reports it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.core.config import Settings
from service.inference.predictor import load_predictor
from tests.factories import ModelSpec, gradient, pixel_specs
from xray.contract.decoders import ImageFormat
from xray.contract.ensembles import LOW_CONFIDENCE, MODELS_DISAGREE, OUT_OF_DISTRIBUTION, REASONS
from xray.contract.errors import ChecksumMismatchError, ManifestError
from xray.contract.images import DecodedImage
from xray.contract.input_check import InputCheck, MahalanobisModel, load_input_check, save_statistics
from xray.contract.manifest import InputCheckSpec, file_sha256


def statistics(**overrides: object) -> MahalanobisModel:
    fields: dict[str, object] = {
        "means": np.asarray([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], dtype=np.float32),
        "components": np.asarray([[1.0], [0.0], [0.0]], dtype=np.float32),
        "variances": np.asarray([4.0], dtype=np.float32),
    }
    return MahalanobisModel(**{**fields, **overrides})  # type: ignore[arg-type]


def test_distance_is_to_the_nearest_class_mean_in_whitened_units() -> None:
    model = statistics()
    values = np.asarray([[1.0, 0.0, 0.0], [5.0, 3.0, 0.0], [-2.0, 0.0, 0.0]], dtype=np.float32)
    # Only the first axis is modelled (variance 4); the others are ignored without a residual term.
    np.testing.assert_allclose(model.distance(values), [1 / 4, 1 / 4, 4 / 4])


def test_the_residual_term_counts_what_the_components_leave_out() -> None:
    model = statistics(residual_variance=9.0, median=1.0, spread=2.0)
    values = np.asarray([[0.0, 3.0, 0.0], [4.0, 0.0, 6.0]], dtype=np.float32)
    np.testing.assert_allclose(model.distance(values), [9 / 9, 36 / 9])
    np.testing.assert_allclose(model.z_score(values), [(1 - 1) / 2, (4 - 1) / 2])


def test_class_maps_are_read_flattened() -> None:
    model = statistics()
    maps = np.zeros((2, 1, 1, 3), dtype=np.float32)
    maps[1, 0, 0, 0] = 2.0
    np.testing.assert_allclose(model.distance(maps), [0.0, 1.0])


def _spec(folder: Path, threshold: float = 3.0) -> InputCheckSpec:
    path = folder / "input_check.npz"
    return InputCheckSpec(method="mahalanobis", file=path.name, sha256=file_sha256(path), threshold=threshold)


def test_statistics_survive_a_round_trip_and_the_check_flags_far_images(tmp_path: Path) -> None:
    save_statistics(
        tmp_path / "input_check.npz", {"scratch": {"features": statistics(median=0.5, spread=0.25)}}
    )
    check = load_input_check(_spec(tmp_path), tmp_path, {"scratch": ["features", "class_maps"]})
    stored = check.models["scratch"]["features"]
    assert (stored.median, stored.spread) == (0.5, 0.25)
    near, far = [0.5, 0.0, 0.0], [12.0, 0.0, 0.0]
    results = check.evaluate({"scratch": {"features": np.asarray([near, far], dtype=np.float32)}}, 2)
    assert [result.in_distribution for result in results] == [True, False]
    assert results[1].score == pytest.approx(((12 - 4) ** 2 / 4 - 0.5) / 0.25)  # nearest mean: 4
    assert {result.threshold for result in results} == {3.0}


def test_a_changed_statistics_file_stops_the_start(tmp_path: Path) -> None:
    save_statistics(tmp_path / "input_check.npz", {"scratch": {"features": statistics()}})
    spec = _spec(tmp_path)
    save_statistics(tmp_path / "input_check.npz", {"scratch": {"features": statistics(median=1.0)}})
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        load_input_check(spec, tmp_path, {"scratch": ["features"]})


def test_statistics_for_an_output_the_graph_lacks_stop_the_start(tmp_path: Path) -> None:
    save_statistics(tmp_path / "input_check.npz", {"scratch": {"class_maps": statistics()}})
    with pytest.raises(ManifestError, match="no model of that name has that graph output"):
        load_input_check(_spec(tmp_path), tmp_path, {"scratch": ["features"]})


def test_inconsistent_statistics_stop_the_start(tmp_path: Path) -> None:
    broken = statistics(variances=np.asarray([4.0, 1.0], dtype=np.float32))
    save_statistics(tmp_path / "input_check.npz", {"scratch": {"features": broken}})
    with pytest.raises(ManifestError, match="inconsistent"):
        load_input_check(_spec(tmp_path), tmp_path, {"scratch": ["features"]})


def test_the_score_averages_only_the_highest_views_so_one_fooled_network_does_not_outvote_the_rest() -> None:
    # Validation median 1 and spread 1, so z = distance - 1, and the distance on the modelled axis
    # is x² / 4 from the nearest mean (0): the image sits at the centre of view a (z -1) and far
    # out in b (x -8: z 15) and c (x -6: z 8).
    views = {name: {"features": statistics(median=1.0, spread=1.0)} for name in ("a", "b", "c")}
    image = {
        name: {"features": np.asarray([[x, 0.0, 0.0]], np.float32)}
        for name, x in zip("abc", (0, -8, -6), strict=True)
    }
    assert InputCheck("mahalanobis", 9.0, views).scores(image)[0] == pytest.approx((-1 + 15 + 8) / 3)
    assert InputCheck("mahalanobis", 9.0, views, highest_views=2).scores(image)[0] == pytest.approx(11.5)
    assert InputCheck("mahalanobis", 9.0, views).evaluate(image, 1)[0].in_distribution
    assert not InputCheck("mahalanobis", 9.0, views, highest_views=2).evaluate(image, 1)[0].in_distribution
    assert InputCheck("mahalanobis", 9.0, views, highest_views=3).scores(image)[0] == pytest.approx(22 / 3)


def test_highest_views_travels_from_the_manifest_and_more_than_the_views_stops_the_start(
    tmp_path: Path,
) -> None:
    save_statistics(tmp_path / "input_check.npz", {"scratch": {"features": statistics()}})
    spec = _spec(tmp_path).model_copy(update={"highest_views": 1})
    assert load_input_check(spec, tmp_path, {"scratch": ["features"]}).highest_views == 1
    assert load_input_check(_spec(tmp_path), tmp_path, {"scratch": ["features"]}).highest_views is None
    with pytest.raises(ManifestError, match=r"highest_views is 2, but input_check\.npz has statistics for 1"):
        load_input_check(spec.model_copy(update={"highest_views": 2}), tmp_path, {"scratch": ["features"]})


def test_without_a_check_every_image_passes_under_method_none() -> None:
    results = InputCheck.disabled().evaluate({}, 3)
    assert [(r.in_distribution, r.method) for r in results] == [(True, "none")] * 3


def test_every_reason_is_defined() -> None:
    assert set(REASONS) == {LOW_CONFIDENCE, OUT_OF_DISTRIBUTION, MODELS_DISAGREE}
    assert all(len(text) > 20 for text in REASONS.values())


def _image(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels=pixels, format=ImageFormat.PNG)


@pytest.mark.parametrize("execution", ["sequential", "parallel"])
def test_the_predictor_flags_an_image_unlike_the_training_images_in_both_ensembles(
    make_models: Callable[..., Path], execution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.core.concurrency.available_cpus", lambda: 2)
    folder = make_models(pixel_specs(with_maps=True, with_features=True), input_check_threshold=1.0)
    predictor = load_predictor(Settings(models_dir=folder, model_execution=execution))
    predictor.warm_up()
    usual, blank = predictor.predict([_image(gradient()), _image(np.zeros((48, 40), np.uint8))])
    assert usual.input_check.in_distribution
    assert usual.input_check.score < 1.0
    assert not blank.input_check.in_distribution
    # Mean level 0 and mean square 0 against expected 0.5 and 0.3: 100 * (0.25 + 0.09) = 34.
    assert blank.input_check.score == pytest.approx(34.0, rel=1e-4)
    for decision in blank.ensembles.values():
        assert decision.uncertain
        assert OUT_OF_DISTRIBUTION in decision.uncertain_reasons
    for decision in usual.ensembles.values():
        assert OUT_OF_DISTRIBUTION not in decision.uncertain_reasons


def test_disagreeing_models_make_the_ensembles_uncertain(make_models: Callable[..., Path]) -> None:
    agreeing = [
        ModelSpec(name, probabilities=[0.05, 0.05, 0.9])
        for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2")
    ]
    disagreeing = [*agreeing[:2], ModelSpec("efficientnet_v2_b2", probabilities=[0.9, 0.05, 0.05])]
    for specs, expected in ((agreeing, ()), (disagreeing, (MODELS_DISAGREE,))):
        predictor = load_predictor(Settings(models_dir=make_models(specs, abstain_below=0.5)))
        (prediction,) = predictor.predict([_image(gradient())])
        for decision in prediction.ensembles.values():
            assert decision.uncertain_reasons == expected
            assert decision.uncertain == bool(expected)
        assert prediction.input_check.method == "none"


def test_a_low_confidence_answer_says_so(make_models: Callable[..., Path]) -> None:
    specs = [
        ModelSpec(name, probabilities=[0.3, 0.3, 0.4])
        for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2")
    ]
    predictor = load_predictor(Settings(models_dir=make_models(specs, abstain_below=0.5)))
    (prediction,) = predictor.predict([_image(gradient())])
    assert prediction.ensembles["classic"].uncertain_reasons == (LOW_CONFIDENCE,)


def test_feature_widths_that_do_not_fit_the_statistics_fail_the_warm_up(
    make_models: Callable[..., Path],
) -> None:
    folder = make_models(pixel_specs(with_features=True), input_check_threshold=1.0)
    wide = {
        name: {
            "features": statistics(
                means=np.zeros((3, 5), np.float32),
                components=np.eye(5, 1, dtype=np.float32),
            )
        }
        for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2")
    }
    save_statistics(folder / "input_check.npz", wide)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input_check"]["sha256"] = file_sha256(folder / "input_check.npz")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    predictor = load_predictor(Settings(models_dir=folder))
    with pytest.raises(Exception, match="statistics expect 5 values per image"):
        predictor.warm_up()
