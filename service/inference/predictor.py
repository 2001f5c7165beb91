"""From decoded images to per-model and ensemble decisions.

`load_predictor` is the whole start-up path (manifest → checksums → sessions), shared by the
HTTP service and the offline `xray predict`, so both answer identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from service.core.concurrency import ConcurrencyPlan
from service.core.config import Settings
from service.inference.runner import SideBySide, forward
from xray.contract.decoders import ImageFormat
from xray.contract.ensembles import (
    ENSEMBLES,
    MODELS_DISAGREE,
    OUT_OF_DISTRIBUTION,
    Decision,
    decide,
    members,
)
from xray.contract.errors import InferenceFailedError, ModelLoadError, ProviderUnavailableError
from xray.contract.images import DecodedImage, DicomReference, resize_gray
from xray.contract.input_check import NOT_CHECKED, VIEWS, CheckResult, InputCheck, load_input_check
from xray.contract.manifest import Manifest, load_manifest, verify_model_files
from xray.contract.model import OnnxModel, available_providers
from xray.contract.providers import resolve_providers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Everything `/predict` answers for one image.

    Attributes:
        classes: Class names, in the manifest's order.
        models: Model name → its calibrated decision.
        ensembles: "classic" and "confidence" → their decisions.
        model_versions: Model name → version.
        dicom: The instance's UIDs, for DICOM input.
        timings: Model name → seconds its session ran for the batch this image was in.
        inference_seconds: Wall-clock seconds of all the models' forward passes for that batch
            (less than the sum of `timings` when the models run side by side).
        input_check: Whether the image looks like the radiographs the models were trained on.
    """

    classes: tuple[str, ...]
    models: dict[str, Decision]
    ensembles: dict[str, Decision]
    model_versions: dict[str, str]
    dicom: DicomReference | None = None
    timings: dict[str, float] = field(default_factory=dict)
    inference_seconds: float = 0.0
    input_check: CheckResult = NOT_CHECKED


@dataclass(frozen=True)
class ForwardPass:
    """What one forward pass of every model over a batch gave."""

    probabilities: dict[str, npt.NDArray[np.float64]]
    maps: dict[str, npt.NDArray[np.float32]]
    timings: dict[str, float]
    seconds: float
    checks: list[CheckResult] = field(default_factory=list)


class Predictor:
    """The loaded models and the ensemble settings of one manifest."""

    def __init__(
        self,
        manifest: Manifest,
        models: Mapping[str, OnnxModel],
        *,
        plan: ConcurrencyPlan | None = None,
        input_check: InputCheck | None = None,
    ) -> None:
        """Combine a manifest with one loaded session per model entry.

        Args:
            manifest: The validated manifest.
            models: One session per manifest entry.
            plan: The serving plan the sessions were opened for; with more than one model thread,
                the models of a batch run side by side on its model pool (see `SideBySide`);
                otherwise (and without a plan) one after another on the caller's thread.
            input_check: The manifest's input check; default: the `none` check, which never flags.
        """
        missing = [entry.name for entry in manifest.models if entry.name not in models]
        if missing:
            raise ValueError(f"no session for model(s) {missing}")
        self.manifest = manifest
        self.models = {entry.name: models[entry.name] for entry in manifest.models}
        self.classes = tuple(manifest.classes)
        self.versions = {entry.name: entry.version for entry in manifest.models}
        self.input_check = input_check or InputCheck.disabled()
        self._features_for = tuple(
            name for name in self.models if "features" in self.input_check.views_of(name)
        )
        self._maps_for_check = tuple(
            name for name in self.models if "class_maps" in self.input_check.views_of(name)
        )
        pool = plan.model_pool() if plan is not None and len(self.models) > 1 else None
        self._side_by_side = SideBySide(self.models, pool) if pool is not None else None

    @property
    def parallel(self) -> bool:
        """Whether the models of a batch run side by side."""
        return self._side_by_side is not None

    def close(self) -> None:
        """Stop the side-by-side threads after the running passes end."""
        if self._side_by_side is not None:
            self._side_by_side.close()

    def forward(self, images: Sequence[DecodedImage], *, maps_for: Collection[str] = ()) -> ForwardPass:
        """One forward pass of every model: calibrated probabilities, class maps of `maps_for`, timings.

        Raises:
            InferenceFailedError: A model gave logits of the wrong shape (the request fails with a
                503; the service stays up).
        """
        # Each distinct input size is resized once and shared: the bundled models all take 160x160,
        # and resizing a 512x512 upload costs as much as the scratch network's forward pass.
        sizes = {(model.entry.input.height, model.entry.input.width) for model in self.models.values()}
        resized: dict[tuple[int, int], npt.NDArray[np.uint8]] = {
            (height, width): np.stack([resize_gray(image.pixels, height, width) for image in images])
            for height, width in sizes
        }
        inputs = {
            name: model.from_gray(resized[(model.entry.input.height, model.entry.input.width)])
            for name, model in self.models.items()
        }
        maps_for = {*maps_for, *self._maps_for_check}
        started = time.perf_counter()
        if self._side_by_side is not None:
            runs = self._side_by_side.run(inputs, maps_for, self._features_for)
        else:
            runs = {
                name: forward(
                    self.models[name],
                    batch,
                    with_maps=name in maps_for,
                    with_features=name in self._features_for,
                )
                for name, batch in inputs.items()
            }
        result = ForwardPass({}, {}, {}, time.perf_counter() - started)
        views: dict[str, dict[str, npt.NDArray[np.float32]]] = {name: {} for name in runs}
        for name, run in runs.items():
            logits = run.outputs.logits
            if logits.shape != (len(images), len(self.classes)):
                raise InferenceFailedError(
                    f"model {name!r} returned logits of shape {logits.shape}, expected "
                    f"({len(images)}, {len(self.classes)})"
                )
            result.probabilities[name] = self.models[name].calibrated(logits)
            result.timings[name] = run.seconds
            if run.outputs.maps is not None:
                result.maps[name] = run.outputs.maps
                views[name]["class_maps"] = run.outputs.maps
            if run.outputs.features is not None:
                views[name]["features"] = run.outputs.features
        result.checks.extend(self.input_check.evaluate(views, len(images)))
        return result

    def combine(self, images: Sequence[DecodedImage], done: ForwardPass) -> list[Prediction]:
        """Each image's per-model decisions and every ensemble of `ENSEMBLES`, from one forward pass."""
        spec = self.manifest.ensembles
        voters = members(done.probabilities, spec.classic.weights)  # the same for every image
        results = []
        for row, image in enumerate(images):
            per_model = {name: probs[row] for name, probs in done.probabilities.items()}
            models = {name: decide(probs) for name, probs in per_model.items()}
            check = done.checks[row]
            tops = {models[name].label_index for name in voters}
            reasons = [
                *([] if check.in_distribution else [OUT_OF_DISTRIBUTION]),
                *([MODELS_DISAGREE] if len(tops) > 1 else []),
            ]
            ensembles = {
                name: ensemble.combine(per_model, spec).with_reasons(*reasons)
                for name, ensemble in ENSEMBLES.items()
            }
            results.append(
                Prediction(
                    classes=self.classes,
                    models=models,
                    ensembles=ensembles,
                    model_versions=dict(self.versions),
                    dicom=image.dicom,
                    timings=dict(done.timings),
                    inference_seconds=done.seconds,
                    input_check=check,
                )
            )
        return results

    def predict(self, images: Sequence[DecodedImage]) -> list[Prediction]:
        """Run every model on a batch of decoded images and combine the answers.

        Args:
            images: One or more decoded images, at any size.

        Returns:
            One prediction per image, in order.
        """
        if not images:
            return []
        return self.combine(images, self.forward(images))

    def gradcam_models(self) -> list[str]:
        """The models whose graphs give Grad-CAM maps."""
        return [name for name, model in self.models.items() if model.entry.outputs.class_maps]

    def warm_up(self, batch_size: int = 1) -> None:
        """Run each model once on a blank image, so the first request pays no lazy start-up.

        Then, with `batch_size` > 1, one full batch through the path requests take: the memory a
        full batch needs (onnxruntime's arenas grow to their peak and keep it; the batch's
        buffers) is taken now, so that the service's footprint when ready is close to its
        footprint under load, which is what a memory request or limit should be sized on
        (`python -m bench.memory_growth`: with the idle heap trim, +14 % after 32 clients
        without this, +8 to +9 % with it).

        Raises:
            ModelLoadError: A model returns a wrong shape or non-finite values.
        """
        for name, model in self.models.items():
            spec = model.entry.input
            blank = np.zeros((spec.height, spec.width), dtype=np.uint8)
            started = time.perf_counter()
            outputs = model.run_outputs(
                model.prepare([blank]),
                with_maps=name in self._maps_for_check,
                with_features=name in self._features_for,
            )
            logits = outputs.logits
            for view, values in (("features", outputs.features), ("class_maps", outputs.maps)):
                statistics = self.input_check.models.get(name, {}).get(view)
                if (
                    values is not None
                    and statistics is not None
                    and values.size != statistics.components.shape[0]
                ):
                    raise ModelLoadError(
                        f"model {name!r} gives {view} of shape {values.shape}; the input check's "
                        f"statistics expect {statistics.components.shape[0]} values per image"
                    )
            if self._side_by_side is not None:  # a first estimate of each model's share of the work
                self._side_by_side.observe(name, time.perf_counter() - started, 1)
            if logits.shape != (1, len(self.classes)) or not np.all(np.isfinite(logits)):
                raise ModelLoadError(
                    f"model {name!r} failed warm-up: logits of shape {logits.shape}, finite="
                    f"{bool(np.all(np.isfinite(logits)))}, expected (1, {len(self.classes)}) finite values"
                )
            logger.info("warm-up of %s on %s took %.3fs", name, model.provider, time.perf_counter() - started)
        if batch_size > 1:
            started = time.perf_counter()
            blank_image = DecodedImage(pixels=np.zeros((512, 512), dtype=np.uint8), format=ImageFormat.PNG)
            self.predict([blank_image] * batch_size)
            logger.info("warm-up at batch %d took %.3fs", batch_size, time.perf_counter() - started)


def load_predictor(settings: Settings, models_dir: Path | None = None) -> Predictor:
    """Read the manifest, verify every file's sha256, and open one session per model.

    Args:
        settings: Providers, threads and the models folder.
        models_dir: Overrides `settings.models_dir`.

    Raises:
        StartupError: Any problem with the manifest, the files, the providers or the graphs; the
            message names the file and the problem.
    """
    folder = models_dir or settings.models_dir
    # The service's own NumPy work (map upsampling, small matrix products) gets one BLAS thread:
    # OpenBLAS's worker threads busy-wait after every call and took the cores from onnxruntime
    # (measured: /explain's forward passes 20 ms -> 37 ms when the maps used a 2-thread BLAS).
    threadpool_limits(limits=1, user_api="blas")
    manifest = load_manifest(folder)
    paths = verify_model_files(manifest, folder)
    choice = resolve_providers(settings.providers, available_providers(), strict=settings.strict_providers)
    if choice.missing:
        logger.warning(
            "execution provider(s) %s requested but unavailable in this onnxruntime build; using %s",
            choice.missing,
            choice.providers,
        )
    plan = ConcurrencyPlan.from_settings(settings, len(manifest.models))
    models = {
        entry.name: OnnxModel(entry, paths[entry.name], choice.providers, plan.session_threads)
        for entry in manifest.models
    }
    for model in models.values():
        if model.provider != choice.providers[0]:
            if settings.strict_providers:
                raise ProviderUnavailableError(
                    f"model {model.name!r} fell back to {model.provider} although {choice.providers[0]} "
                    "was requested with strict providers (are the CUDA/cuDNN libraries installed?)"
                )
            logger.warning(
                "model %s runs on %s, not on the first requested provider %s (onnxruntime fell back)",
                model.name,
                model.provider,
                choice.providers[0],
            )
    input_check = load_input_check(
        manifest.input_check,
        folder,
        {
            entry.name: [view for view in VIEWS if getattr(entry.outputs, view) is not None]
            for entry in manifest.models
        },
    )
    logger.info(
        "loaded %d model(s) from %s with %d intra-op thread(s) each, run %s",
        len(models),
        folder,
        plan.session_threads.intra_op,
        f"side by side on {plan.model_threads} threads" if plan.model_threads > 1 else "one after another",
    )
    logger.info("input check: %s", input_check.method)
    return Predictor(manifest, models, plan=plan, input_check=input_check)
