"""DICOM decoding: LUTs, windows, MONOCHROME1, and refusals with a clear 4xx."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import dicom_bytes
from xray.contract.decoders import ImageFormat
from xray.contract.decoders.dicom import UnsupportedDicomError, window
from xray.contract.errors import InvalidImageError, PayloadTooLargeError
from xray.contract.preprocessing import decode_image


def ramp(rows: int = 8, columns: int = 16, top: int = 4095) -> np.ndarray:
    return np.round(np.linspace(0, top, rows * columns)).reshape(rows, columns).astype(np.uint16)


def test_uids_are_reported_and_nothing_else() -> None:
    decoded = decode_image(dicom_bytes(ramp()), declared=ImageFormat.DICOM)
    assert decoded.format is ImageFormat.DICOM
    assert decoded.dicom is not None
    assert decoded.dicom.sop_instance_uid
    assert decoded.dicom.study_instance_uid
    assert decoded.dicom.series_instance_uid
    assert set(vars(decoded.dicom)) == {"study_instance_uid", "series_instance_uid", "sop_instance_uid"}


def test_without_a_window_the_image_range_maps_to_0_255() -> None:
    pixels = decode_image(dicom_bytes(ramp())).pixels
    assert pixels.min() == 0
    assert pixels.max() == 255
    assert np.all(np.diff(pixels.ravel().astype(int)) >= 0)


def test_monochrome1_equals_inverted_monochrome2() -> None:
    stored = ramp()
    mono2 = decode_image(dicom_bytes(stored, photometric="MONOCHROME2")).pixels
    # The same anatomy stored as MONOCHROME1 has inverted stored values.
    mono1 = decode_image(dicom_bytes(4095 - stored, photometric="MONOCHROME1")).pixels
    np.testing.assert_array_equal(mono1, mono2)


def test_monochrome1_inversion_comes_after_the_window() -> None:
    stored = ramp()
    mono2 = decode_image(dicom_bytes(stored, window=(1000, 500))).pixels
    mono1 = decode_image(dicom_bytes(stored, photometric="MONOCHROME1", window=(1000, 500))).pixels
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_window_clips_outside_and_ramps_inside() -> None:
    stored = ramp()
    pixels = decode_image(dicom_bytes(stored, window=(2048, 1024))).pixels
    assert np.all(pixels[stored <= 2048 - 512] == 0)
    assert np.all(pixels[stored > 2048 + 512] == 255)
    inside = (stored > 1600) & (stored < 2500)
    assert 0 < pixels[inside].min() < pixels[inside].max() < 255


def test_rescale_is_applied_before_the_window() -> None:
    stored = ramp()
    # Stored values shifted by -1000 then rescaled by +1000: the window sees the same values.
    direct = decode_image(dicom_bytes(stored + 1000, bits_stored=13, window=(2048, 1024))).pixels
    rescaled = decode_image(dicom_bytes(stored, window=(2048, 1024), rescale=(1.0, 1000.0))).pixels
    np.testing.assert_array_equal(direct, rescaled)


def test_window_functions_follow_the_standard() -> None:
    x = np.array([0.0, 99.5, 100.0, 150.0, 200.0, 1000.0])
    linear = window(x, center=100.0, width=101.0, function="LINEAR")
    np.testing.assert_allclose(linear, [0, (99.5 - 99.5) / 100 + 0.5, 0.505, 1.0, 1.0, 1.0])
    exact = window(x, center=100.0, width=100.0, function="LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.495, 0.5, 1.0, 1.0, 1.0])
    sigmoid = window(np.array([100.0]), center=100.0, width=50.0, function="SIGMOID")
    np.testing.assert_allclose(sigmoid, [0.5])


def test_window_width_below_one_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="window width"):
        window(np.zeros(3), center=0, width=0.5, function="LINEAR")


def test_file_without_preamble_or_meta_is_read() -> None:
    data = dicom_bytes(ramp(), preamble=False)
    assert data[128:132] != b"DICM"
    decoded = decode_image(data, declared=ImageFormat.DICOM)
    assert decoded.pixels.shape == (8, 16)


def test_no_pixel_data_is_refused_clearly() -> None:
    with pytest.raises(UnsupportedDicomError, match="no pixel data"):
        decode_image(dicom_bytes(None, sop_class="1.2.840.10008.5.1.4.1.1.88.22"))


def test_multi_frame_is_refused() -> None:
    frames = np.stack([ramp(), ramp()])
    with pytest.raises(UnsupportedDicomError, match="2 frames"):
        decode_image(dicom_bytes(frames, frames=2))


def test_rgb_is_refused() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UnsupportedDicomError, match="RGB"):
        decode_image(dicom_bytes(rgb, photometric="RGB", bits_stored=8))


def test_pixel_limit_applies_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError, match="8x16"):
        decode_image(dicom_bytes(ramp()), max_pixels=100)


def test_truncated_pixel_data_is_a_client_error() -> None:
    data = dicom_bytes(ramp(64, 64))
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) - 4000], declared=ImageFormat.DICOM)
