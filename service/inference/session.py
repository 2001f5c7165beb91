"""One onnxruntime session per model, checked against its manifest entry.

The provider list comes from `XRAY_PROVIDERS`. A requested provider that this onnxruntime build
lacks is dropped with a warning (or stops start-up when strict), and the provider a session
*actually* uses, which onnxruntime reports after loading, is what the service logs and reports:
onnxruntime itself falls back to the CPU when, say, the CUDA libraries are missing, and that
fallback must never pass unnoticed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.config import PROVIDER_ALIASES
from service.errors import ModelLoadError, ProviderUnavailableError
from service.inference.manifest import ModelEntry
from service.inference.preprocessing import GrayImage, resize_gray

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - an install without the cpu or gpu extra
    raise ImportError(
        "onnxruntime is not installed: install the package with the `cpu` extra "
        "(onnxruntime) or the `gpu` extra (onnxruntime-gpu)"
    ) from exc

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class GraphOutputs:
    """What one run of a graph gave: logits [batch, classes], and maps and features when asked."""

    logits: npt.NDArray[np.float32]
    maps: npt.NDArray[np.float32] | None = None
    features: npt.NDArray[np.float32] | None = None


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers."""
    return list(ort.get_available_providers())


@dataclass(frozen=True)
class ProviderChoice:
    """The providers to ask onnxruntime for, and those requested but unavailable."""

    providers: list[str]
    missing: list[str]


def resolve_providers(
    requested: Sequence[str], available: Sequence[str], *, strict: bool = False
) -> ProviderChoice:
    """Map `XRAY_PROVIDERS` names to onnxruntime providers this build has.

    The CPU provider always ends the list, so a model can always run.

    Args:
        requested: Names such as "cuda", "cpu" or full onnxruntime provider names, in priority order.
        available: `onnxruntime.get_available_providers()`.
        strict: Raise instead of dropping an unavailable provider.

    Raises:
        ProviderUnavailableError: `strict` and a requested provider is unavailable.
    """
    wanted = [PROVIDER_ALIASES.get(name, name) for name in requested]
    chosen = [name for name in dict.fromkeys(wanted) if name in available]
    missing = [name for name in dict.fromkeys(wanted) if name not in available]
    if missing and strict:
        raise ProviderUnavailableError(
            f"execution provider(s) {missing} requested but this onnxruntime build has only {list(available)}"
        )
    if CPU not in chosen:
        chosen.append(CPU)
    return ProviderChoice(providers=chosen, missing=missing)


@dataclass(frozen=True)
class ThreadConfig:
    """Threads given to each session."""

    intra_op: int
    inter_op: int = 1


class OnnxModel:
    """An onnxruntime session with the manifest entry that describes it.

    Thread-safe: onnxruntime allows concurrent `run` calls on one session.
    """

    def __init__(
        self, entry: ModelEntry, path: Path, providers: Sequence[str], threads: ThreadConfig
    ) -> None:
        """Load the model and check its graph against the manifest entry.

        Raises:
            ModelLoadError: The file is not a loadable ONNX model or does not match the entry.
        """
        self.entry = entry
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads.intra_op
        options.inter_op_num_threads = threads.inter_op
        options.log_severity_level = 3  # onnxruntime's own warnings go through our checks instead
        # No busy-waiting after a run: the service runs several sessions (and the PNG rendering)
        # one after another on the same cores, and each session's idle threads spinning for work
        # starve the next one. Measured on 2 cores: the three bundled models back to back took
        # 129.5 ms with spinning and 61.7 ms without (/predict p50 over HTTP: 211 ms -> 70 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        started = time.perf_counter()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as exc:
            raise ModelLoadError(
                f"model {entry.name!r}: onnxruntime cannot load {entry.file}: {exc}"
            ) from exc
        self.providers: list[str] = list(self._session.get_providers())
        self.provider: str = self.providers[0]
        self._check_signature()
        logger.info(
            "loaded model %s %s from %s on %s in %.2fs",
            entry.name,
            entry.version,
            entry.file,
            self.provider,
            time.perf_counter() - started,
        )

    @property
    def name(self) -> str:
        """The model's name from the manifest."""
        return self.entry.name

    def _check_signature(self) -> None:
        spec = self.entry.input
        inputs = {node.name: node for node in self._session.get_inputs()}
        if spec.name not in inputs:
            raise ModelLoadError(
                f"model {self.name!r}: the graph has no input {spec.name!r} (it has {sorted(inputs)})"
            )
        if len(inputs) != 1:
            raise ModelLoadError(f"model {self.name!r}: expected one graph input, found {sorted(inputs)}")
        node = inputs[spec.name]
        if node.type != "tensor(float)":
            raise ModelLoadError(
                f"model {self.name!r}: input {spec.name!r} is {node.type}, expected tensor(float)"
            )
        expected = (
            (spec.height, spec.width, spec.channels)
            if spec.layout == "NHWC"
            else (spec.channels, spec.height, spec.width)
        )
        shape = list(node.shape)
        if len(shape) != 4:
            raise ModelLoadError(
                f"model {self.name!r}: input {spec.name!r} has rank {len(shape)}, expected 4"
            )
        for axis, (declared, wanted) in enumerate(zip(shape[1:], expected, strict=True), start=1):
            # Symbolic (str) or unknown (None) dimensions accept any size.
            if isinstance(declared, int) and declared != wanted:
                raise ModelLoadError(
                    f"model {self.name!r}: input dimension {axis} is {declared} in the graph but "
                    f"{wanted} in the manifest ({spec.layout})"
                )
        outputs = {node.name for node in self._session.get_outputs()}
        declared_outputs = (
            self.entry.outputs.logits,
            self.entry.outputs.probabilities,
            self.entry.outputs.class_maps,
            self.entry.outputs.features,
        )
        for declared_name in declared_outputs:
            if declared_name is not None and declared_name not in outputs:
                raise ModelLoadError(
                    f"model {self.name!r}: the graph has no output {declared_name!r} "
                    f"(it has {sorted(outputs)})"
                )

    def prepare(self, images: Sequence[GrayImage]) -> npt.NDArray[np.float32]:
        """Stack decoded grayscale images into this model's input tensor.

        Args:
            images: Images at any size; each is resized to the model's input size.

        Returns:
            Float32 batch in the manifest's layout, channels, and value range.
        """
        spec = self.entry.input
        return self.from_gray(np.stack([resize_gray(image, spec.height, spec.width) for image in images]))

    def from_gray(self, batch: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
        """Gray images already at the input size, (n, height, width) in [0, 255], as the input tensor."""
        spec = self.entry.input
        batch = np.asarray(batch, dtype=np.float32)
        low, high = spec.value_range
        if (low, high) != (0.0, 255.0):
            batch = (batch * np.float32((high - low) / 255.0) + np.float32(low)).astype(np.float32)
        if spec.layout == "NHWC":
            batch = np.repeat(batch[..., None], spec.channels, axis=3)
        else:
            batch = np.repeat(batch[:, None, ...], spec.channels, axis=1)
        return np.ascontiguousarray(batch)

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the graph and return its logits, shape [batch, classes]."""
        feeds: dict[str, Any] = {self.entry.input.name: batch}
        (logits,) = self._session.run([self.entry.outputs.logits], feeds)
        return np.asarray(logits, dtype=np.float32)

    def run_outputs(
        self, batch: npt.NDArray[np.float32], *, with_maps: bool = False, with_features: bool = False
    ) -> GraphOutputs:
        """Logits and, as asked, the Grad-CAM class maps and the pooled features, in one forward pass.

        Raises:
            ValueError: Maps or features asked of a graph without that output.
        """
        names = [self.entry.outputs.logits]
        for wanted, name, what in (
            (with_maps, self.entry.outputs.class_maps, "class_maps"),
            (with_features, self.entry.outputs.features, "features"),
        ):
            if wanted and name is None:
                raise ValueError(f"model {self.name!r} has no {what} output")
            if wanted and name is not None:
                names.append(name)
        feeds: dict[str, Any] = {self.entry.input.name: batch}
        values = iter(np.asarray(value, dtype=np.float32) for value in self._session.run(names, feeds))
        logits = next(values)
        maps = next(values) if with_maps else None
        features = next(values) if with_features else None
        return GraphOutputs(logits, maps, features)
