"""Training away from the data: packed splits in, compact weights out, rebuilt runs back."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.training.conftest import write_labelled_images
from training.architectures import build_model
from training.config import SplitConfig
from training.data import read_dataset, split_by_group
from training.packed import assign_weights, compact_weights, expand_weights, load_pack, pack, unpack


@pytest.mark.parametrize("levels", [127, 63])
def test_compact_weights_round_large_kernels_per_output_channel(levels: int) -> None:
    model = build_model("scratch", 32).model
    compact = compact_weights(model, levels)
    values = expand_weights(compact)
    assert set(values) == {variable.path for variable in model.weights}
    int8 = [key for key in compact if key.endswith("::int8")]
    assert int8
    assert all(compact[key].dtype == np.int8 and np.abs(compact[key]).max() <= levels for key in int8)
    for variable in model.weights:
        original = keras.ops.convert_to_numpy(variable)
        if f"{variable.path}::int8" in compact:
            step = np.abs(original).reshape(-1, original.shape[-1]).max(axis=0) / levels
            assert np.all(np.abs(values[variable.path] - original) <= step / 2 + 1e-7)
        else:
            assert np.array_equal(values[variable.path], original)


def test_assigning_weights_checks_every_path_and_shape() -> None:
    model = build_model("scratch", 32).model
    values = expand_weights(compact_weights(model))
    target = build_model("scratch", 32).model
    assign_weights(target, values)
    for a, b in zip(target.get_weights(), (values[v.path] for v in model.weights), strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="missing"):
        assign_weights(target, {k: v for k, v in values.items() if not k.startswith("logits")})
    with pytest.raises(ValueError, match="shape"):
        assign_weights(build_model("scratch", 32, num_classes=4).model, values)


@pytest.mark.slow
def test_a_pack_holds_the_split_at_its_size_and_a_run_comes_back(tmp_path: Path) -> None:
    records = read_dataset(write_labelled_images(tmp_path / "data", per_class=6))
    split = split_by_group(records, SplitConfig(seed=0))
    split.save(tmp_path / "runs" / "split.json")
    meta = pack(tmp_path / "runs", 32, tmp_path / "pack.npz")
    loaded_meta, data = load_pack(tmp_path / "pack.npz")
    assert loaded_meta == meta
    assert meta["split_fingerprints"]["test"] == split.fingerprint("test")
    assert data["train_images"].shape == (len(split.train), 32, 32)
    assert data["val_labels"].tolist() == [
        ("normal", "pneumonia", "tuberculosis").index(r.label) for r in split.val
    ]

    model = build_model("scratch", 32).model
    np.savez_compressed(tmp_path / "scratch.weights.npz", **compact_weights(model))
    records_dir = tmp_path / "remote" / "scratch"
    records_dir.mkdir(parents=True)
    (records_dir / "config.json").write_text(json.dumps({"arch": "scratch", "image_size": 32}))
    best = unpack(tmp_path / "scratch.weights.npz", records_dir, tmp_path / "local" / "scratch")
    restored = keras.models.load_model(best, compile=False)
    batch = data["val_images"][:2].astype(np.float32)[..., None]
    expected = keras.ops.convert_to_numpy(model(batch))
    assert np.abs(keras.ops.convert_to_numpy(restored(batch)) - expected).max() < 0.05 * max(
        1.0, np.abs(expected).max()
    )
