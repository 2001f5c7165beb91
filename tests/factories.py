"""Small artifacts made by the tests: tiny ONNX models with known outputs, manifests, images."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

CLASSES = ["normal", "pneumonia", "tuberculosis"]
MODEL_NAMES = ["scratch", "inception_resnet_v2", "efficientnet_v2_b2"]
OPSET = 17


def _input_shape(height: int, width: int, channels: int, layout: str) -> list[Any]:
    return ["batch", height, width, channels] if layout == "NHWC" else ["batch", channels, height, width]


def _save(
    nodes: list[onnx.NodeProto],
    initializers: list[TensorProto],
    shape: list[Any],
    path: Path,
    *,
    with_maps: bool = False,
    with_features: bool = False,
) -> None:
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", None]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None]),
    ]
    if with_maps:
        outputs.append(
            helper.make_tensor_value_info("class_maps", TensorProto.FLOAT, ["batch", None, None, None])
        )
    if with_features:
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        outputs,
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def constant_model(
    path: Path,
    probabilities: Sequence[float],
    *,
    height: int = 32,
    width: int = 32,
    channels: int = 1,
    layout: str = "NHWC",
) -> None:
    """A model whose softmax output is `probabilities` for every image.

    logits = log(p) + 0 * mean(image), so the batch dimension follows the input.
    """
    logits = np.log(np.asarray(probabilities, dtype=np.float64)).astype(np.float32)[None, :]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Unsqueeze", ["zeros", "axis1"], ["column"]),
        helper.make_node("Add", ["column", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("bias", TensorProto.FLOAT, list(logits.shape), logits.ravel().tolist()),
    ]
    _save(nodes, initializers, _input_shape(height, width, channels, layout), path)


def intensity_model(
    path: Path,
    weights: Sequence[float],
    bias: Sequence[float],
    *,
    height: int = 32,
    width: int = 32,
    channels: int = 1,
    layout: str = "NHWC",
    with_maps: bool = False,
    with_features: bool = False,
) -> None:
    """A model whose logits are `mean(image) / 255 * weights + bias`: the output depends on pixels.

    With `with_features`, a `features` output [mean / 255, mean of squares / 255²] per image.
    """
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "column_shape"], ["column"]),
        helper.make_node("Mul", ["column", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    scale = (np.asarray(weights, dtype=np.float32) / 255.0)[None, :]
    initializers = [
        helper.make_tensor("column_shape", TensorProto.INT64, [2], [-1, 1]),
        helper.make_tensor("scale", TensorProto.FLOAT, list(scale.shape), scale.ravel().tolist()),
        helper.make_tensor("bias", TensorProto.FLOAT, [1, len(bias)], [float(b) for b in bias]),
    ]
    if with_maps:
        # class_maps[..., c] = weights[c] * (the first channel average-pooled by 8): for a class with a
        # positive weight, Grad-CAM is the normalised, downsampled image itself.
        assert layout == "NHWC"
        nodes += [
            helper.make_node("Slice", ["image", "zero1", "one1", "three1"], ["first_channel"]),
            helper.make_node("Transpose", ["first_channel"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Transpose", ["pooled"], ["pooled_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Mul", ["pooled_nhwc", "map_weights"], ["class_maps"]),
        ]
        initializers += [
            helper.make_tensor("zero1", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("three1", TensorProto.INT64, [1], [3]),
            helper.make_tensor(
                "map_weights", TensorProto.FLOAT, [1, 1, 1, len(weights)], [float(w) for w in weights]
            ),
        ]
    if with_features:
        nodes += [
            helper.make_node("Mul", ["image", "image"], ["squares"]),
            helper.make_node("ReduceMean", ["squares"], ["mean_square"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["mean_square", "column_shape"], ["square_column"]),
            helper.make_node("Mul", ["column", "per_level"], ["first_feature"]),
            helper.make_node("Mul", ["square_column", "per_square"], ["second_feature"]),
            helper.make_node("Concat", ["first_feature", "second_feature"], ["features"], axis=1),
        ]
        initializers += [
            helper.make_tensor("per_level", TensorProto.FLOAT, [], [1 / 255]),
            helper.make_tensor("per_square", TensorProto.FLOAT, [], [1 / 255**2]),
        ]
    _save(
        nodes,
        initializers,
        _input_shape(height, width, channels, layout),
        path,
        with_maps=with_maps,
        with_features=with_features,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ModelSpec:
    """One model of a test manifest: constant probabilities, or an intensity model."""

    name: str
    probabilities: Sequence[float] | None = None
    weights: Sequence[float] | None = None
    bias: Sequence[float] | None = None
    height: int = 32
    width: int = 32
    channels: int = 1
    layout: str = "NHWC"
    temperature: float = 1.0
    with_maps: bool = False
    with_features: bool = False
    version: str = "1.0.0-test"
    extra: dict[str, Any] = field(default_factory=dict)


def write_models_dir(
    folder: Path,
    specs: Sequence[ModelSpec],
    *,
    order: Sequence[str] = ("efficientnet_v2_b2", "inception_resnet_v2"),
    tau: float = 0.90,
    abstain_below: float = 0.5,
    classes: Sequence[str] = CLASSES,
    input_check_threshold: float | None = None,
    weights: dict[str, float] | None = None,
) -> Path:
    """Write the ONNX files and a manifest.json with their sha256 into `folder`.

    With `input_check_threshold`, also an input check over the models `with_features`: each
    network's images are expected near mean level 0.5 and mean square 0.3 (a mid-grey image with
    some contrast, like `gradient()`), one unit of distance per 0.1 off (see `input_check_for`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in specs:
        path = folder / f"{spec.name}.onnx"
        shape = {"height": spec.height, "width": spec.width, "channels": spec.channels, "layout": spec.layout}
        if spec.probabilities is not None:
            constant_model(path, spec.probabilities, **shape)  # type: ignore[arg-type]
        else:
            assert spec.weights is not None
            assert spec.bias is not None
            intensity_model(
                path,
                spec.weights,
                spec.bias,
                with_maps=spec.with_maps,
                with_features=spec.with_features,
                **shape,  # type: ignore[arg-type]
            )
        entries.append(
            {
                "name": spec.name,
                "version": spec.version,
                "file": path.name,
                "sha256": sha256(path),
                "input": {"name": "image", "dtype": "float32", "value_range": [0, 255], **shape},
                "outputs": {
                    "logits": "logits",
                    "probabilities": "probabilities",
                    **({"class_maps": "class_maps"} if spec.with_maps else {}),
                    **({"features": "features"} if spec.with_features else {}),
                },
                **(
                    {"gradcam": {"layer": f"{spec.name}_features", "output": "class_maps"}}
                    if spec.with_maps
                    else {}
                ),
                "temperature": spec.temperature,
                **spec.extra,
            }
        )
    manifest = {
        "schema_version": 1,
        "classes": list(classes),
        "models": entries,
        "ensembles": {
            "confidence": {"order": list(order), "tau": tau},
            "abstain_below": abstain_below,
            **({"classic": {"weights": weights}} if weights is not None else {}),
        },
    }
    if input_check_threshold is not None:
        manifest["input_check"] = input_check_for(
            folder, [spec.name for spec in specs if spec.with_features], input_check_threshold
        )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def input_check_for(folder: Path, names: Sequence[str], threshold: float) -> dict[str, Any]:
    """Write `input_check.npz` for the tiny `features` models and return its manifest entry.

    Every class mean is (0.5, 0.3) and both features have variance 0.01, so the score of an
    image is 100 · ((level - 0.5)² + (square - 0.3)²), the same for every network.
    """
    from xray.contract.input_check import MahalanobisModel, save_statistics

    statistics = {
        name: {
            "features": MahalanobisModel(
                means=np.tile(np.asarray([[0.5, 0.3]], dtype=np.float32), (3, 1)),
                components=np.eye(2, dtype=np.float32),
                variances=np.full(2, 0.01, dtype=np.float32),
            )
        }
        for name in names
    }
    path = folder / "input_check.npz"
    save_statistics(path, statistics)
    return {"method": "mahalanobis", "file": path.name, "sha256": sha256(path), "threshold": threshold}


def pixel_specs(*, with_maps: bool = False, with_features: bool = False) -> list[ModelSpec]:
    """Three intensity models at three input sizes, whose answers depend on the pixels."""
    table = [
        ("scratch", [4.0, 0.0, -4.0], [-2.0, 0.0, 2.0], 64),
        ("inception_resnet_v2", [-3.0, 3.0, 0.0], [1.0, -1.0, 0.0], 48),
        ("efficientnet_v2_b2", [1.0, -1.0, 2.0], [0.0, 0.5, -1.0], 40),
    ]
    return [
        ModelSpec(
            name,
            weights=weights,
            bias=bias,
            height=side,
            width=side,
            with_maps=with_maps,
            with_features=with_features,
        )
        for name, weights, bias, side in table
    ]


def default_specs() -> list[ModelSpec]:
    """Three constant models, none confident enough to decide the cascade at tau 0.9."""
    return [
        ModelSpec("scratch", probabilities=[0.1, 0.2, 0.7]),
        ModelSpec("inception_resnet_v2", probabilities=[0.2, 0.5, 0.3]),
        ModelSpec("efficientnet_v2_b2", probabilities=[0.6, 0.3, 0.1]),
    ]


def png_bytes(array: np.ndarray, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def gradient(height: int = 48, width: int = 40) -> np.ndarray:
    """A deterministic 8-bit grayscale test image spanning 0..255."""
    y, x = np.mgrid[0:height, 0:width]
    return np.round(255 * (0.6 * y / (height - 1) + 0.4 * x / (width - 1))).astype(np.uint8)


def dicom_bytes(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    rescale: tuple[float, float] | None = None,
    frames: int = 1,
    preamble: bool = True,
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
) -> bytes:
    """A DICOM file built with pydicom: uncompressed, explicit VR little endian."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds: Dataset = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = "SYNTHETIC-0001"
    if pixels is not None:
        samples = 3 if pixels.ndim == 3 and pixels.shape[-1] == 3 and frames == 1 else 1
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
        ds.BitsAllocated = 16 if bits_stored > 8 else 8
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        if samples == 3:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        dtype = np.uint16 if bits_stored > 8 else np.uint8
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if not preamble:
        # A bare dataset as old modalities wrote it: no preamble, no "DICM", no file meta group,
        # implicit VR little endian.
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        bare = DicomBytesIO()
        bare.is_little_endian, bare.is_implicit_VR = True, True
        plain = Dataset()
        plain.update(ds)
        write_dataset(bare, plain)
        data = bare.getvalue()
    return data
