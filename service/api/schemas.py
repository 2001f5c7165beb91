"""Response bodies of the HTTP API (and of `xray predict`), as docs/api.md defines them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model

from service.inference.explanations import Explanation
from service.inference.predictor import Prediction, Predictor
from service.pacs.writeback import WRITE_BACK
from xray.contract.ensembles import ENSEMBLES, REASONS, Decision
from xray.contract.input_check import CheckResult


class ModelResult(BaseModel):
    """One model's calibrated answer."""

    probabilities: dict[str, float]
    label: str
    confidence: float


class EnsembleResult(ModelResult):
    """An ensemble's answer."""

    uncertain: bool
    uncertain_reasons: list[Literal[tuple(REASONS)]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="Why the answer is uncertain (empty when it is not): `low_confidence`, the top "
        "probability is below `abstain_below`; `out_of_distribution`, the input check finds the image "
        "unlike the chest radiographs the models learnt from; `models_disagree`, the networks' top "
        "labels differ.",
    )


class CascadeResult(EnsembleResult):
    """The confidence cascade's answer, with the model that decided (or "classic")."""

    decided_by: str


if TYPE_CHECKING:
    Ensembles = BaseModel
    EnsembleInfo = BaseModel
else:
    #: Every ensemble's answer, a field per entry of `ENSEMBLES`.
    Ensembles = create_model(
        "Ensembles",
        __doc__="Every ensemble's answer.",
        **{
            name: (CascadeResult if entry.names_decider else EnsembleResult, Field(description=entry.rule))
            for name, entry in ENSEMBLES.items()
        },
    )


class InputCheckResult(BaseModel):
    """Whether the image looks like the frontal chest radiographs the models were trained on."""

    in_distribution: bool
    score: float = Field(description="The check's score; above `threshold` is out of distribution.")
    threshold: float
    method: str = Field(description="`mahalanobis`, or `none` for models exported without a check.")

    @classmethod
    def from_check(cls, check: CheckResult) -> InputCheckResult:
        """The check's answer, with an infinite threshold (method `none`) reported as 0."""
        threshold = check.threshold if math.isfinite(check.threshold) else 0.0
        return cls(
            in_distribution=check.in_distribution, score=check.score, threshold=threshold, method=check.method
        )


class DicomIdentifiers(BaseModel):
    """The analysed instance's UIDs (DICOM input only)."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None


class PredictResponse(BaseModel):
    """The body of `POST /predict`."""

    request_id: str
    classes: list[str]
    models: dict[str, ModelResult]
    ensembles: Ensembles
    model_versions: dict[str, str]
    input_check: InputCheckResult
    dicom: DicomIdentifiers | None = Field(default=None, description="Present for DICOM input only.")

    @classmethod
    def from_prediction(cls, prediction: Prediction, request_id: str) -> PredictResponse:
        """Build the response for one image."""
        classes = list(prediction.classes)

        def fields(decision: Decision) -> dict[str, Any]:
            return {
                "probabilities": {
                    name: float(p) for name, p in zip(classes, decision.probabilities, strict=True)
                },
                "label": classes[decision.label_index],
                "confidence": decision.confidence,
            }

        def doubts(decision: Decision) -> dict[str, Any]:
            return {"uncertain": decision.uncertain, "uncertain_reasons": list(decision.uncertain_reasons)}

        def ensemble_result(name: str, decision: Decision) -> EnsembleResult:
            if ENSEMBLES[name].names_decider:
                decider = decision.decided_by or "classic"
                return CascadeResult(**fields(decision), **doubts(decision), decided_by=decider)
            return EnsembleResult(**fields(decision), **doubts(decision))

        dicom = prediction.dicom
        return cls(
            request_id=request_id,
            classes=classes,
            models={name: ModelResult(**fields(decision)) for name, decision in prediction.models.items()},
            ensembles=Ensembles(
                **{name: ensemble_result(name, decision) for name, decision in prediction.ensembles.items()}
            ),
            model_versions=dict(prediction.model_versions),
            input_check=InputCheckResult.from_check(prediction.input_check),
            dicom=None
            if dicom is None
            else DicomIdentifiers(
                study_instance_uid=dicom.study_instance_uid,
                series_instance_uid=dicom.series_instance_uid,
                sop_instance_uid=dicom.sop_instance_uid,
            ),
        )

    def to_json(self) -> str:
        """Serialise as `/predict` does (no null `dicom` for non-DICOM input)."""
        return self.model_dump_json(exclude_none=True)


class MapResult(BaseModel):
    """One explanation map, at the submitted image's size or scaled down within `max_side`."""

    method: str
    target: str
    height: int = Field(description="The map's height in pixels.")
    width: int = Field(description="The map's width in pixels.")
    layer: str | None = Field(default=None, description="The layer the map is built on (per model).")
    heatmap_png: str = Field(description="Base64 PNG, 8-bit gray: the normalised map.")
    overlay_png: str | None = Field(
        default=None,
        description="Base64 PNG, RGB: the coloured map blended onto the X-ray "
        "(absent with `overlays=false`).",
    )


class ExplainResponse(PredictResponse):
    """The body of `POST /explain`: the `/predict` body plus the maps."""

    explanations: dict[str, MapResult] = Field(description="Per model, and `ensemble`.")
    image_png: str | None = Field(
        default=None,
        description="With `include_image=true`: the radiograph as the service decoded it (8-bit gray, "
        "after DICOM windowing), base64 PNG at its size; what the maps are drawn over.",
    )

    @classmethod
    def from_explanation(
        cls,
        result: Explanation,
        pngs: dict[str, tuple[str, str | None]],
        layers: dict[str, str | None],
        request_id: str,
        image_png: str | None = None,
    ) -> ExplainResponse:
        """Build the response from the maps and their base64 PNGs (heatmap, overlay)."""
        base = PredictResponse.from_prediction(result.prediction, request_id)
        target = result.prediction.classes[result.target_index]
        explanations = {
            name: MapResult(
                method=result.method,
                target=target,
                height=result.ensemble.shape[0],
                width=result.ensemble.shape[1],
                layer=layers.get(name),
                heatmap_png=heat,
                overlay_png=overlay,
            )
            for name, (heat, overlay) in pngs.items()
        }
        return cls(**base.model_dump(), explanations=explanations, image_png=image_png)


#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


class AnalyzeRequest(BaseModel):
    """The body of `POST /pacs/analyze`: a study, optionally narrowed to a series or an instance."""

    model_config = {"extra": "forbid"}

    study_instance_uid: str = Field(pattern=UID_PATTERN, max_length=64)
    series_instance_uid: str | None = Field(default=None, pattern=UID_PATTERN, max_length=64)
    sop_instance_uid: str | None = Field(default=None, pattern=UID_PATTERN, max_length=64)


class WrittenObjectInfo(BaseModel):
    """One object written back to the PACS."""

    kind: str = Field(
        description="What was written: "
        + "; ".join(f"`{entry.kind}`, {entry.description}" for entry in WRITE_BACK.values())
        + "."
    )
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


class AnalyzedInstance(BaseModel):
    """One analysed instance: its prediction and what was written back for it."""

    series_instance_uid: str
    sop_instance_uid: str
    prediction: PredictResponse
    written: list[WrittenObjectInfo]


class SkippedInstance(BaseModel):
    """An instance of the study that is not an analysable image (an SR, a colour image, ...)."""

    series_instance_uid: str | None
    sop_instance_uid: str | None
    detail: str


class AnalyzeResponse(BaseModel):
    """The body of `POST /pacs/analyze`."""

    request_id: str
    study_instance_uid: str
    instances: list[AnalyzedInstance]
    skipped: list[SkippedInstance]


class InputInfo(BaseModel):
    """A model's input contract."""

    height: int
    width: int
    channels: int
    layout: str


class ModelInfo(BaseModel):
    """One loaded model, as `GET /models` reports it."""

    name: str
    version: str
    file: str
    sha256: str
    input: InputInfo
    temperature: float
    provider: str = Field(description="The execution provider onnxruntime actually uses.")
    providers: list[str] = Field(description="All providers of the session, in priority order.")
    metrics: dict[str, Any]


if not TYPE_CHECKING:
    #: Every ensemble's settings, a field per entry of `ENSEMBLES`, and the shared threshold.
    EnsembleInfo = create_model(
        "EnsembleInfo",
        __doc__="Every ensemble's settings.",
        **{
            name: (ensemble.description_type, Field(description=ensemble.rule))
            for name, ensemble in ENSEMBLES.items()
        },
        abstain_below=(float, ...),
    )


class InputCheckInfo(BaseModel):
    """The input check's settings (`none`: the models were exported without one)."""

    method: str
    threshold: float | None = None


class ModelsResponse(BaseModel):
    """The body of `GET /models`."""

    classes: list[str]
    models: list[ModelInfo]
    ensembles: EnsembleInfo
    input_check: InputCheckInfo

    @classmethod
    def from_predictor(cls, predictor: Predictor) -> ModelsResponse:
        """Describe the loaded models and the ensembles."""
        manifest = predictor.manifest
        return cls(
            classes=list(manifest.classes),
            models=[
                ModelInfo(
                    name=model.entry.name,
                    version=model.entry.version,
                    file=model.entry.file,
                    sha256=model.entry.sha256,
                    input=InputInfo(
                        height=model.entry.input.height,
                        width=model.entry.input.width,
                        channels=model.entry.input.channels,
                        layout=model.entry.input.layout,
                    ),
                    temperature=model.entry.temperature,
                    provider=model.provider,
                    providers=model.providers,
                    metrics=model.entry.metrics,
                )
                for model in predictor.models.values()
            ],
            ensembles=EnsembleInfo(
                **{name: ensemble.describe(manifest.ensembles) for name, ensemble in ENSEMBLES.items()},
                abstain_below=manifest.ensembles.abstain_below,
            ),
            input_check=InputCheckInfo(method=predictor.input_check.method)
            if manifest.input_check is None
            else InputCheckInfo(method=manifest.input_check.method, threshold=manifest.input_check.threshold),
        )


class ReadyResponse(BaseModel):
    """The body of `GET /health/ready` when ready."""

    status: str
    models: dict[str, str] = Field(description="Model name → execution provider in use.")


class LiveResponse(BaseModel):
    """The body of `GET /health/live`."""

    status: str


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
