"""The input check: does an image look like the frontal chest radiographs the models learnt from?

It reads two views of each network from the same forward pass that gives the probabilities: the
pooled features (the input of the linear head, a graph output named `features`) and the layout of
the Grad-CAM class maps (`class_maps`, flattened). For each view it computes the Mahalanobis
distance to the nearest class mean under the training split's shared covariance (Lee et al.
2018), in its probabilistic-PCA form (Tipping & Bishop 1999): exact in the leading principal
components, one pooled variance for the rest, since the full 1,408–1,536-dimensional covariance
is singular with 2,635 training images. Each distance becomes a robust z-score against the
validation split (median, median absolute deviation); the check's score is the mean of the
manifest's `highest_views` highest z-scores of an image (of all of them where it does not say).
Averaging only the highest keeps one network that finds an image ordinary from outvoting the
others: EfficientNetV2B2 3.1.0-cpu's features put uniform noise at the centre of the chests, and
the mean over all six views then let every noise image through. Pooled features catch images
whose content is foreign (blank, noise, text, CT); the class-map layout catches radiographs of
the wrong anatomy, whose content is similar but whose layout is not a chest's. A score above the
threshold (chosen on validation so that 98 % of chest radiographs pass) is out of distribution.

The statistics live beside the models in `input_check.npz`, whose sha256 the manifest records; a
manifest without an input check loads, and its check reports `none` and never flags.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xray.contract.errors import ChecksumMismatchError, ManifestError, ModelFileError
from xray.contract.manifest import InputCheckSpec, file_sha256

#: The graph output holding each network's pooled features, shape [batch, k].
FEATURES_OUTPUT = "features"
#: The views of a network the check reads, by the name of the graph output kind.
VIEWS = ("features", "class_maps")
#: The statistics file beside the models.
INPUT_CHECK_FILE = "input_check.npz"
NO_CHECK = "none"

Features = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MahalanobisModel:
    """One view's statistics: class means and the shared covariance in probabilistic-PCA form.

    Attributes:
        means: (classes, k) class means of the training split.
        components: (k, d) orthonormal leading eigenvectors of the shared covariance.
        variances: (d,) their eigenvalues.
        residual_variance: The mean of the other eigenvalues; 0 drops the residual term.
        median: Median distance on the validation split.
        spread: Median absolute deviation of the validation distances (> 0).
    """

    means: npt.NDArray[np.float32]
    components: npt.NDArray[np.float32]
    variances: npt.NDArray[np.float32]
    residual_variance: float = 0.0
    median: float = 0.0
    spread: float = 1.0

    def distance(self, values: Features) -> Scores:
        """Squared distance of each row of `values` (n, k) to its nearest class mean."""
        data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        offsets = data[:, None, :] - self.means.astype(np.float64)[None, :, :]  # (n, classes, k)
        projected = offsets @ self.components.astype(np.float64)  # (n, classes, d)
        inside = (projected**2 / self.variances.astype(np.float64)).sum(axis=2)
        if self.residual_variance > 0:
            outside = np.maximum((offsets**2).sum(axis=2) - (projected**2).sum(axis=2), 0.0)
            inside = inside + outside / self.residual_variance
        return np.asarray(inside.min(axis=1), dtype=np.float64)

    def z_score(self, values: Features) -> Scores:
        """The distance as a robust z-score against the validation split."""
        return (self.distance(values) - self.median) / self.spread


@dataclass(frozen=True)
class CheckResult:
    """The input check's answer for one image."""

    in_distribution: bool
    score: float
    threshold: float
    method: str


#: The answer of the `none` check (models exported without one): never flags.
NOT_CHECKED = CheckResult(in_distribution=True, score=0.0, threshold=float("inf"), method=NO_CHECK)


@dataclass(frozen=True)
class InputCheck:
    """The fitted check of one manifest, or the `none` check that never flags."""

    method: str
    threshold: float
    models: Mapping[str, Mapping[str, MahalanobisModel]]
    #: The score averages this many of an image's highest z-scores; None: all of them.
    highest_views: int | None = None

    @classmethod
    def disabled(cls) -> InputCheck:
        """The check of a manifest without one: reports `none` and never flags."""
        return cls(NO_CHECK, float("inf"), {})

    def views_of(self, network: str) -> tuple[str, ...]:
        """The views (`features`, `class_maps`) the check reads of `network`."""
        return tuple(self.models.get(network, {}))

    def scores(self, views: Mapping[str, Mapping[str, Features]]) -> Scores:
        """The score of each image: the mean of its `highest_views` highest z-scores over networks and views.

        Args:
            views: Network name → view name → (n, ...) outputs of that view.
        """
        z_scores = [
            model.z_score(views[network][view])
            for network, by_view in self.models.items()
            for view, model in by_view.items()
        ]
        return mean_of_highest(z_scores, self.highest_views)

    def evaluate(self, views: Mapping[str, Mapping[str, Features]], count: int) -> list[CheckResult]:
        """The check's answer for each of `count` images.

        Args:
            views: Network name → view name → outputs (ignored by the `none` check).
            count: Images in the batch.
        """
        if not self.models:
            return [NOT_CHECKED] * count
        return [
            CheckResult(bool(score <= self.threshold), float(score), self.threshold, self.method)
            for score in self.scores(views)
        ]


def mean_of_highest(z_scores: Sequence[Scores], highest: int | None) -> Scores:
    """Per image, the mean of the `highest` largest of its z-scores (of all of them when None).

    Args:
        z_scores: One (n,) array per network and view.
        highest: How many of each image's largest z-scores to average.
    """
    stacked = np.stack(z_scores)
    if highest is not None and highest < len(stacked):
        stacked = np.sort(stacked, axis=0)[len(stacked) - highest :]
    return np.asarray(np.mean(stacked, axis=0), dtype=np.float64)


_FIELDS = ("means", "components", "variances", "scalars")


def save_statistics(path: Path, models: Mapping[str, Mapping[str, MahalanobisModel]]) -> None:
    """Write the statistics as a plain npz (no pickles), keys `<network>.<view>.<field>`."""
    arrays: dict[str, npt.NDArray[np.float32]] = {}
    for network, by_view in models.items():
        for view, model in by_view.items():
            prefix = f"{network}.{view}"
            arrays[f"{prefix}.means"] = np.asarray(model.means, dtype=np.float32)
            arrays[f"{prefix}.components"] = np.asarray(model.components, dtype=np.float32)
            arrays[f"{prefix}.variances"] = np.asarray(model.variances, dtype=np.float32)
            arrays[f"{prefix}.scalars"] = np.asarray(
                [model.residual_variance, model.median, model.spread], dtype=np.float32
            )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buffer.getvalue())


def _view_statistics(arrays: Mapping[str, npt.NDArray[np.float32]], prefix: str) -> MahalanobisModel:
    means, components, variances, scalars = (np.asarray(arrays[f"{prefix}.{name}"]) for name in _FIELDS)
    residual_variance, median, spread = (float(value) for value in scalars)
    consistent = (
        means.ndim == 2
        and components.ndim == 2
        and means.shape[1] == components.shape[0]
        and variances.shape == (components.shape[1],)
        and bool(np.all(variances > 0))
        and spread > 0
        and residual_variance >= 0
    )
    if not consistent:
        raise ValueError(f"means {means.shape}, components {components.shape}, variances {variances.shape}")
    return MahalanobisModel(
        means.astype(np.float32),
        components.astype(np.float32),
        variances.astype(np.float32),
        residual_variance,
        median,
        spread,
    )


def load_input_check(
    spec: InputCheckSpec | None, models_dir: Path, outputs: Mapping[str, Collection[str]]
) -> InputCheck:
    """Load and verify the manifest's input check (the widths are checked at warm-up).

    Args:
        spec: The manifest's `input_check`, or None for the `none` check.
        models_dir: The folder the statistics file is relative to.
        outputs: Network name → the views (`features`, `class_maps`) its graph outputs.

    Raises:
        ModelFileError: The statistics file is missing or unreadable.
        ChecksumMismatchError: Its sha256 differs from the manifest's.
        ManifestError: It lacks statistics for a network's view, or they are inconsistent.
    """
    if spec is None:
        return InputCheck.disabled()
    path = models_dir / spec.file
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise ModelFileError(f"input check: cannot read {spec.file} in {models_dir}: {exc}") from exc
    if actual != spec.sha256:
        raise ChecksumMismatchError(
            f"input check: {spec.file} has sha256 {actual}, the manifest records {spec.sha256}"
        )
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: np.asarray(stored[key]) for key in stored.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"input check: {spec.file} is not a readable npz file: {exc}") from exc
    models: dict[str, dict[str, MahalanobisModel]] = {}
    for prefix in sorted({key.rsplit(".", 1)[0] for key in arrays}):
        network, _, view = prefix.partition(".")
        if view not in outputs.get(network, ()):
            raise ManifestError(
                f"input check: {spec.file} has statistics for {network!r} ({view}), but no model of "
                f"that name has that graph output"
            )
        try:
            models.setdefault(network, {})[view] = _view_statistics(arrays, prefix)
        except (KeyError, ValueError) as exc:
            raise ManifestError(
                f"input check: {spec.file} has incomplete or inconsistent statistics for "
                f"{network!r} ({view}): {exc}"
            ) from exc
    if not models:
        raise ManifestError(f"input check: {spec.file} holds no statistics")
    views = sum(len(by_view) for by_view in models.values())
    if spec.highest_views is not None and spec.highest_views > views:
        raise ManifestError(
            f"input check: highest_views is {spec.highest_views}, but {spec.file} has statistics "
            f"for {views} view(s)"
        )
    return InputCheck(spec.method, spec.threshold, models, spec.highest_views)
