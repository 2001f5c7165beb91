"""The image types of the contract, and the one resize and equalisation both training and serving use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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


def equalize_histogram(pixels: GrayImage) -> GrayImage:
    """Global histogram equalisation of an 8-bit grayscale image (any shape).

    Each level v becomes round(255 · (cdf(v) - cdf(lowest)) / (n - cdf(lowest))), where cdf counts
    the pixels at or below a level and `lowest` is the darkest level present: the darkest pixels
    map to 0, the brightest to 255, and the levels spread by how often they occur. A flat image is
    returned as it is. Archives process radiographs with different tone curves, and a network
    can tell an archive, and so a class, by its curve; equalised, every image has the same
    (nearly flat) histogram, whatever curve made it.
    """
    histogram = np.bincount(pixels.ravel(), minlength=256)
    cumulative = np.cumsum(histogram)
    lowest = cumulative[int(np.flatnonzero(histogram)[0])] if pixels.size else 0
    if cumulative[-1] == lowest:
        return pixels
    table = np.clip(np.rint((cumulative - lowest) * 255.0 / (cumulative[-1] - lowest)), 0, 255)
    equalized: GrayImage = table.astype(np.uint8)[pixels]
    return equalized


#: The names of the intensity transforms a model's input may declare (`InputSpec.equalization`).
Equalization = Literal["none", "histogram"]

#: Each `Equalization`'s transform.
EQUALIZATIONS: dict[Equalization, Callable[[GrayImage], GrayImage]] = {
    "none": lambda pixels: pixels,
    "histogram": equalize_histogram,
}


def equalize_batch(images: npt.NDArray[np.uint8], equalization: Equalization) -> npt.NDArray[np.uint8]:
    """Apply the named equalisation (`EQUALIZATIONS`) to each image of an (n, h, w) uint8 batch."""
    if equalization == "none":
        return images
    transform = EQUALIZATIONS[equalization]
    return np.stack([transform(image) for image in images]) if len(images) else images
