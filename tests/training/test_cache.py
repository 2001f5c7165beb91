"""The decode-once cache, and the proof that training and serving feed identical arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.config import Settings
from service.inference.predictor import load_predictor
from tests.factories import ModelSpec, gradient, jpeg_bytes, png_bytes, write_models_dir
from training.cache import load_images
from training.data import Record
from xray.contract.preprocessing import decode_image


def sixteen_bit_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16) * 64).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> list[Record]:
    image = gradient(90, 70)
    rgb = np.stack([image, np.roll(image, 5), image // 2], axis=-1)
    payloads = {
        "gray.png": png_bytes(image),
        "rgb.png": png_bytes(rgb),
        "photo.jpg": jpeg_bytes(image, quality=80),
        "deep.png": sixteen_bit_png(image),
    }
    records = []
    for name, data in payloads.items():
        (tmp_path / name).write_bytes(data)
        records.append(Record(path=tmp_path / name, label="normal", group=name))
    return records


def test_training_and_serving_feed_identical_arrays(files: list[Record], tmp_path: Path) -> None:
    size = 48
    cached = load_images(files, size, tmp_path / "cache")
    models = write_models_dir(
        tmp_path / "models",
        [ModelSpec("scratch", probabilities=[0.3, 0.3, 0.4], height=size, width=size)],
        order=["scratch"],
    )
    model = load_predictor(Settings(models_dir=models)).models["scratch"]
    for index, record in enumerate(files):
        served = model.prepare([decode_image(record.path.read_bytes()).pixels])[0, ..., 0]
        np.testing.assert_array_equal(served, cached[index].astype(np.float32), err_msg=record.path.name)


def test_cache_is_reused_and_rebuilt_when_a_file_changes(files: list[Record], tmp_path: Path) -> None:
    first = load_images(files, 32, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1
    again = load_images(files, 32, tmp_path / "cache")
    assert again.filename == first.filename
    files[0].path.write_bytes(png_bytes(np.full((40, 40), 7, np.uint8)))
    rebuilt = load_images(files, 32, tmp_path / "cache")
    assert rebuilt.filename != first.filename
    assert np.all(rebuilt[0] == 7)
    assert not list((tmp_path / "cache").glob("*partial*"))
