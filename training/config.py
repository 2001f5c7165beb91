"""Training configuration: every choice that shapes a model, recorded in the manifest."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.architectures import ARCHITECTURES
from training.precision import Precision
from xray.contract.images import Equalization

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "tuberculosis")


class AugmentConfig(BaseModel):
    """Augmentation suited to chest radiographs.

    Small geometric changes and exposure changes, and optionally mixup, which blends pairs of
    images and so makes the labels soft. No vertical flips (anatomy is never upside down);
    horizontal flips are off by default because they move the heart to the right, which a model
    could learn as normal anatomy.
    """

    model_config = ConfigDict(extra="forbid")

    rotation_degrees: float = Field(default=7.0, ge=0, le=30)
    zoom: float = Field(default=0.10, ge=0, lt=0.5)
    shift: float = Field(default=0.06, ge=0, lt=0.5, description="fraction of height/width")
    brightness: float = Field(default=0.10, ge=0, lt=1)
    contrast: float = Field(default=0.15, ge=0, lt=1)
    gamma: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="tone curve: levels become 255·(x/255)^g with log g uniform in ±log(1 + gamma), "
        "before brightness and contrast, since archives and scanners process radiographs with "
        "different tone curves that a model can learn as a class; 0 (the default) = off",
    )
    horizontal_flip: bool = False
    mixup: float = Field(
        default=0.0,
        ge=0,
        le=2,
        description="mixup's Beta(α, α): each image is blended with another of its batch, and its "
        "label and loss weight with the other's; 0 (the default) = off",
    )
    white_box: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="probability of pasting one solid white rectangle (10-35 % of the side wide, "
        "4-15 % high) anywhere on an image, whatever its class: redactions and burned-in labels "
        "look like this, and in kaggle-mix they mark tuberculosis images; 0 (the default) = off",
    )


class DistillConfig(BaseModel):
    """Knowledge distillation: each training image's target blends its label with a teacher's answer.

    The teacher is any model that gave class probabilities for the training images (a stronger
    network, an ensemble, a pretrained model outside this package); its answers arrive as a file,
    so the teacher never has to run inside training.
    """

    model_config = ConfigDict(extra="forbid")

    targets: str = Field(
        description="CSV of the teacher's class probabilities: a `path` column (as in labels.csv, "
        "relative to the data folder, or absolute) and one column per class"
    )
    weight: float = Field(
        default=0.5, gt=0, le=1, description="the teacher's share of each target; the label has the rest"
    )
    temperature: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="softens (> 1) or sharpens (< 1) the teacher's probabilities: p^(1/T), renormalised",
    )


class TrainConfig(BaseModel):
    """One network's training run."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field(description="one of `training.architectures.ARCHITECTURES`")
    image_size: int | None = Field(default=None, description="square input side; default per architecture")
    equalization: Equalization = Field(
        default="none",
        description="`histogram`: equalise each image's histogram after the resize, before augmentation; "
        "the manifest's `input.equalization` makes the service do the same",
    )
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0, description="linear learning-rate warm-up")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    bn_momentum: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="batch-norm moving-average momentum for every network; Keras' 0.99 needs ~700 steps "
        "before inference-mode statistics are usable, several epochs of a dataset this size",
    )
    weight_average: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the trainable weights with this momentum per "
        "step (Polyak averaging); validation, early stopping and `best.keras` then use the average, and "
        "the history also records the live weights' score (`val_macro_f1_live`); default: off",
    )
    patience: int = Field(default=6, ge=1, description="epochs without a better validation macro-F1")
    weights: str = Field(default="none", description="`imagenet`, a local weights file, or `none`")
    init_weights: str | None = Field(
        default=None,
        description="a `.keras` file of the same network to start from (to anneal or fine-tune a "
        "trained model) instead of random initialisation",
    )
    frozen_epochs: int = Field(
        default=2, ge=0, description="epochs on a frozen backbone first, when the weights are pretrained"
    )
    fine_tune_learning_rate_factor: float = Field(default=0.1, gt=0, le=1)
    class_weights: bool = True
    balance_archives: bool = Field(
        default=False,
        description="with class weights: balance the classes within each archive (a source and "
        "its images' stored-size group) before balancing them overall, so that an archive's look "
        "predicts no class (`training.data.archive_balanced_weights`)",
    )
    precision: Precision = Field(
        default="auto",
        description="`auto`: bfloat16 where the hardware computes it natively, else float32 "
        "(variables, logits and the export stay float32 either way)",
    )
    time_budget_minutes: float | None = Field(
        default=None,
        gt=0,
        description="wall-clock training budget over all resumed segments; the cosine schedule is "
        "re-planned after each epoch to end with it (at most `epochs`)",
    )
    seed: int = 42
    quantize: Literal["none", "int8"] = Field(
        default="none", description="serve an INT8 copy (onnxruntime static QDQ) instead of float32"
    )
    steps_per_epoch: int | None = Field(default=None, ge=1, description="cap, for quick runs")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    distill: DistillConfig | None = Field(default=None, description="a teacher to distil from; default: none")

    @model_validator(mode="before")
    @classmethod
    def _legacy_mixed_precision(cls, data: Any) -> Any:
        """Read configs written before `precision` (`mixed_precision: true` meant float16)."""
        if isinstance(data, dict) and "mixed_precision" in data:
            data = dict(data)
            legacy = data.pop("mixed_precision")
            data.setdefault("precision", "float16" if legacy else "float32")
        return data

    @field_validator("arch")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r}; one of {list(ARCHITECTURES)}")
        return value

    @model_validator(mode="after")
    def _large_enough(self) -> TrainConfig:
        smallest = ARCHITECTURES[self.arch].min_size
        if self.image_size is not None and self.image_size < smallest:
            raise ValueError(
                f"image_size {self.image_size} is below {self.arch}'s smallest input, {smallest}"
            )
        return self

    @property
    def size(self) -> int:
        """The input side actually used."""
        return self.image_size or ARCHITECTURES[self.arch].default_size

    @property
    def soft_labels(self) -> bool:
        """Whether training targets are class probabilities (mixup, distillation), not class indices."""
        return self.augment.mixup > 0 or self.distill is not None

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from pretrained weights."""
        return self.arch != "scratch" and self.weights.lower() != "none"


class SplitConfig(BaseModel):
    """How the data is split by patient group."""

    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = 42
