"""`models/manifest.json`: the single source of truth for labels, input contract and ensembles.

The manifest is read and validated once at start-up. Anything wrong with it, or with the files it
names, raises a `StartupError` whose message names the file and the problem, so an operator can
fix it without reading code.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xray.contract.errors import ChecksumMismatchError, ManifestError, ModelFileError
from xray.contract.images import Equalization

MANIFEST_NAME = "manifest.json"
_HASH_CHUNK = 1 << 20


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"file must be a relative path inside the models folder, got {value!r}")
    return value


class _Strict(BaseModel):
    # Unknown keys are refused: a typo in a threshold's name must not silently fall back to a
    # default on a medical triage service.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What the model's input tensor expects.

    The service resizes the grayscale image to (`height`, `width`), applies `equalization`, and
    feeds `dtype` values in `value_range` (the image's 0..255 intensities); any further
    normalisation is inside the exported graph.
    """

    name: str = Field(default="image", description="The graph's input name.")
    height: int = Field(gt=0, le=4096, description="Input height: the service resizes every image to it.")
    width: int = Field(gt=0, le=4096, description="Input width.")
    channels: Literal[1, 3] = Field(description="1: gray; 3: the gray image repeated in three channels.")
    dtype: Literal["float32"] = Field(default="float32", description="The input tensor's type.")
    value_range: tuple[float, float] = Field(
        default=(0.0, 255.0), description="The intensities fed; normalisation is inside the graph."
    )
    layout: Literal["NHWC", "NCHW"] = Field(default="NHWC", description="The input tensor's layout.")
    equalization: Equalization = Field(
        default="none",
        description="Applied to the gray image after the resize, before the value range: `histogram` "
        "equalises each image's histogram (`xray.contract.images.EQUALIZATIONS`), as in training.",
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> InputSpec:
        low, high = self.value_range
        if not low < high:
            raise ValueError(f"value_range must be increasing, got {self.value_range}")
        return self


class OutputSpec(_Strict):
    """Names of the graph's outputs.

    Attributes:
        logits: Pre-softmax class scores, shape [batch, classes]; the service applies the
            temperature and the softmax itself so that calibration lives in the manifest.
        probabilities: The graph's own softmax output, kept for clients of the raw model.
    """

    logits: str = Field(
        description="Pre-softmax class scores, shape [batch, classes]: the service applies the "
        "temperature and the softmax itself, so that calibration lives in the manifest."
    )
    probabilities: str | None = Field(
        default=None, description="The graph's own softmax output, for clients of the raw model."
    )
    class_maps: str | None = Field(
        default=None,
        description="Per-class Grad-CAM maps before ReLU, shape [batch, h, w, classes]: the last "
        "feature maps times the linear head's kernel, exact Grad-CAM for a GAP → Dense head.",
    )
    features: str | None = Field(
        default=None,
        description="The pooled features, shape [batch, k]: the input of the linear head, read by "
        "the input check from the same forward pass.",
    )


class GradCamSpec(_Strict):
    """Where the service finds what Grad-CAM needs."""

    layer: str = Field(description="The Keras layer whose feature maps the maps are built on.")
    output: str = Field(description="The graph output holding the per-class maps.")


class ModelEntry(_Strict):
    """One exported network."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="The model's name in every answer.")
    version: str = Field(min_length=1, description="The model's version, in every answer.")
    file: str = Field(description="The ONNX file, relative to the models folder.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The file's sha256, checked at start-up.")
    input: InputSpec = Field(description="What the input tensor expects.")
    outputs: OutputSpec = Field(description="The names of the graph's outputs.")
    temperature: float = Field(
        default=1.0, gt=0.0, description="Calibration: the logits are divided by it before the softmax."
    )
    gradcam: GradCamSpec | None = Field(default=None, description="Where Grad-CAM's maps come from.")
    quantization: dict[str, Any] | None = Field(
        default=None, description="How the served file was quantized, and how it compares with float."
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Test-split metrics, pooled and per source (by `xray evaluate`)."
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="How it was trained: recipe, precision, epochs, time, curve."
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="The data it was trained on: split counts and fingerprint."
    )
    framework: dict[str, str] = Field(
        default_factory=dict, description="Versions of the libraries that trained and exported it."
    )
    created: datetime | None = Field(default=None, description="When it was exported.")

    @model_validator(mode="after")
    def _gradcam_output_declared(self) -> ModelEntry:
        if self.gradcam is not None and self.gradcam.output != self.outputs.class_maps:
            raise ValueError(
                f"gradcam.output {self.gradcam.output!r} must be the declared outputs.class_maps "
                f"({self.outputs.class_maps!r})"
            )
        return self

    @field_validator("file")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        return _relative_path(value)


class ConfidenceEnsembleSpec(_Strict):
    """The cascade: models asked in `order`; the first whose top probability >= `tau` decides."""

    order: list[str] = Field(min_length=1, description="The models asked, in turn.")
    tau: float = Field(
        default=0.90, gt=0.0, le=1.0, description="The top probability at which a model decides alone."
    )


class ClassicEnsembleSpec(_Strict):
    """The mean: unweighted, unless the manifest gives weights chosen on validation."""

    weights: dict[str, float] | None = Field(
        default=None,
        description="Model name → weight (≥ 0, at least one > 0; every model named) of a weighted mean, "
        "chosen on validation. Absent: the unweighted mean. A model weighted 0 is still run and reported, "
        "but is not a member of the ensembles: it neither enters the mean nor counts in `models_disagree`.",
    )

    @field_validator("weights")
    @classmethod
    def _weights_usable(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if any(not math.isfinite(weight) or weight < 0 for weight in value.values()):
            raise ValueError(f"ensemble weights must be finite and >= 0, got {value}")
        if not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one ensemble weight must be > 0")
        return value


class EnsembleSpec(_Strict):
    """Settings shared by both ensembles."""

    classic: ClassicEnsembleSpec = Field(
        default_factory=ClassicEnsembleSpec, description="The mean (and the cascade's fallback)."
    )
    confidence: ConfidenceEnsembleSpec = Field(description="The cascade.")
    abstain_below: float = Field(
        ge=0.0, le=1.0, description="An ensemble whose top probability is below this is `uncertain`."
    )
    selection: dict[str, Any] = Field(
        default_factory=dict, description="How these settings were chosen (data, method, scores)."
    )
    metrics: dict[str, Any] = Field(default_factory=dict, description="The ensembles' evaluation metrics.")


class InputCheckSpec(_Strict):
    """The input check: whether an image looks like the chest radiographs the models learnt from."""

    method: Literal["mahalanobis"] = Field(description="How images are scored.")
    file: str = Field(description="The statistics file (npz) beside the models.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The file's sha256, checked at start-up.")
    threshold: float = Field(description="A score above this is out of distribution.")
    highest_views: int | None = Field(
        default=None,
        ge=1,
        description="The score is the mean of an image's this many highest view z-scores; absent: of all.",
    )
    selection: dict[str, Any] = Field(
        default_factory=dict, description="How the method and threshold were chosen (data, scores)."
    )
    metrics: dict[str, Any] = Field(default_factory=dict, description="Detection and false-alarm rates.")

    @field_validator("file")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        return _relative_path(value)


class Manifest(_Strict):
    """The whole `manifest.json`."""

    schema_version: Literal[1] = Field(default=1, description="This contract's version.")
    classes: list[str] = Field(
        min_length=2, description="The class names, in the order of every model's outputs."
    )
    models: list[ModelEntry] = Field(min_length=1, description="The networks served.")
    ensembles: EnsembleSpec = Field(description="How the models' answers are combined.")
    input_check: InputCheckSpec | None = Field(
        default=None, description="The input check; without it, every answer says `method: none`."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be unique, got {self.classes}")
        names = [model.name for model in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        unknown = [name for name in self.ensembles.confidence.order if name not in names]
        if unknown:
            raise ValueError(f"ensembles.confidence.order names unknown model(s) {unknown}")
        if len(set(self.ensembles.confidence.order)) != len(self.ensembles.confidence.order):
            raise ValueError("ensembles.confidence.order names a model twice")
        weights = self.ensembles.classic.weights
        if weights is not None and set(weights) != set(names):
            raise ValueError(
                f"ensembles.classic.weights must name every model exactly once: got {sorted(weights)}, "
                f"models are {sorted(names)}"
            )
        if self.input_check is not None and not any(model.outputs.features for model in self.models):
            raise ValueError("input_check needs at least one model with an outputs.features graph output")
        return self

    def model(self, name: str) -> ModelEntry:
        """Return the entry called `name`.

        Raises:
            KeyError: No model has that name.
        """
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)


def load_manifest(models_dir: Path) -> Manifest:
    """Read and validate `models_dir/manifest.json`.

    Args:
        models_dir: The folder holding the manifest and the files it names.

    Returns:
        The validated manifest.

    Raises:
        ManifestError: The file is missing, is not JSON, or does not follow the contract.
    """
    path = models_dir / MANIFEST_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"no model manifest at {path}: set XRAY_MODELS_DIR to a folder exported by `xray export`"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(f"{path} does not follow the manifest contract:\n{exc}") from exc


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks so large models need little memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_files(manifest: Manifest, models_dir: Path) -> dict[str, Path]:
    """Check that every model file exists and matches its recorded sha256.

    Args:
        manifest: The validated manifest.
        models_dir: The folder the manifest's `file` entries are relative to.

    Returns:
        Model name → absolute path of its verified file.

    Raises:
        ModelFileError: A file is missing or unreadable.
        ChecksumMismatchError: A file's content differs from the manifest's sha256.
    """
    paths: dict[str, Path] = {}
    for entry in manifest.models:
        path = (models_dir / entry.file).resolve()
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise ModelFileError(
                f"model {entry.name!r}: file {entry.file} is missing in {models_dir}"
            ) from None
        except OSError as exc:
            raise ModelFileError(f"model {entry.name!r}: cannot read {entry.file}: {exc}") from exc
        if actual != entry.sha256:
            raise ChecksumMismatchError(
                f"model {entry.name!r}: {entry.file} has sha256 {actual}, the manifest records "
                f"{entry.sha256}; the file is corrupt or does not belong to this manifest"
            )
        paths[entry.name] = path
    return paths
