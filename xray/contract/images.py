"""The image types of the contract, and the one resize both training and serving use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:
    from xray.contract.decoders import ImageFormat

GrayImage = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class DicomReference:
    """The UIDs that identify a DICOM instance; the only DICOM attributes the service echoes."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to 8-bit grayscale at its original size.

    Attributes:
        pixels: Array of shape (height, width), dtype uint8.
        format: The container it came in.
        dicom: The instance's UIDs, for DICOM input only.
    """

    pixels: GrayImage
    format: ImageFormat
    dicom: DicomReference | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        height, width = self.pixels.shape
        return int(height), int(width)


def resize_gray(pixels: GrayImage, height: int, width: int) -> GrayImage:
    """Resize an 8-bit grayscale image to (height, width) with antialiased bilinear filtering.

    The aspect ratio is not kept: the whole radiograph fills the model's input, and a heat map
    maps back to the original by the inverse resize.
    """
    if pixels.shape == (height, width):
        return pixels
    resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).copy()
