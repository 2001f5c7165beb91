"""The served model: one ONNX graph with the manifest entry that describes it, owning its contract.

An `OnnxModel` knows its input size and layout, resizes images to it, runs the graph, and gives
calibrated probabilities (its temperature applied here and nowhere else), its Grad-CAM class maps
and its pooled features. The service runs its models through it, and training checks its exports
(parity, calibration, evaluation) through the same object, so both read a graph the same way.

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

from xray.contract.ensembles import Probabilities, calibrated_softmax
from xray.contract.errors import ModelLoadError
from xray.contract.images import GrayImage, equalize_batch, resize_gray
from xray.contract.manifest import ModelEntry
from xray.contract.providers import CPU

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - an install without the cpu or gpu extra
    raise ImportError(
        "onnxruntime is not installed: install the package with the `cpu` extra "
        "(onnxruntime) or the `gpu` extra (onnxruntime-gpu)"
    ) from exc

logger = logging.getLogger(__name__)


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
class ThreadConfig:
    """Threads given to each session."""

    intra_op: int
    inter_op: int = 1


class OnnxModel:
    """An onnxruntime session with the manifest entry that describes it.

    Thread-safe: onnxruntime allows concurrent `run` calls on one session.
    """

    @classmethod
    def open(cls, path: Path, entry: ModelEntry, *, threads: int = 0) -> OnnxModel:
        """The model in `path` on the CPU, described by `entry` (offline use: export checks, evaluation).

        Args:
            path: The ONNX file (its name may differ from `entry.file`, e.g. an INT8 copy).
            entry: The manifest entry describing the graph.
            threads: Intra-op threads; 0 lets onnxruntime use every core.
        """
        return cls(entry, path, [CPU], ThreadConfig(intra_op=threads))

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
        """Gray images already at the input size, (n, height, width) in [0, 255], as the input tensor.

        The manifest's `equalization` is applied here, so every path into the graph (predictions,
        Grad-CAM, SHAP's masked images, the exporter's parity check) sees the pixels training saw.
        """
        spec = self.entry.input
        if spec.equalization != "none":
            gray = np.clip(np.rint(np.asarray(batch, dtype=np.float32)), 0, 255).astype(np.uint8)
            batch = equalize_batch(gray, spec.equalization)
        batch = np.asarray(batch, dtype=np.float32)
        low, high = spec.value_range
        if (low, high) != (0.0, 255.0):
            batch = (batch * np.float32((high - low) / 255.0) + np.float32(low)).astype(np.float32)
        if spec.layout == "NHWC":
            batch = np.repeat(batch[..., None], spec.channels, axis=3)
        else:
            batch = np.repeat(batch[:, None, ...], spec.channels, axis=1)
        return np.ascontiguousarray(batch)

    def calibrated(self, logits: npt.NDArray[np.floating]) -> Probabilities:
        """This model's calibrated probabilities from its logits: softmax(logits / temperature)."""
        return calibrated_softmax(logits, self.entry.temperature)

    def logits_of(self, images: npt.NDArray[np.uint8], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Logits of gray images already at the input size, (n, height, width), in batches."""
        parts = [
            self.run(self.from_gray(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def probabilities_of(self, images: npt.NDArray[np.uint8], batch_size: int = 32) -> Probabilities:
        """Calibrated probabilities of gray images already at the input size, (n, height, width)."""
        return self.calibrated(self.logits_of(images, batch_size))

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
