"""Export a trained run to ONNX for the service, verified, with its manifest entry.

The export model is rebuilt in float32 from the architecture's builder and given the trained
weights (so a mixed-precision run, or a `.keras` file trained with another Keras backend,
exports the same way). It has three outputs:

* `logits` (batch, classes): pre-softmax scores; the service applies the temperature;
* `probabilities` (batch, classes): softmax(logits), for clients of the raw model;
* `class_maps` (batch, h, w, classes): Σ_k W[k, c] · A_k, the last feature maps weighted by the
  linear head's kernel. With a GAP → Dense head, ∂logit_c/∂A_k(i, j) = W[k, c] / (h·w) at every
  position, so the Grad-CAM weights α_k^c are W[k, c] / (h·w) and Grad-CAM = ReLU(class_maps_c)
  up to that positive factor, which normalisation removes: exact, from the same forward pass.

Every export is checked against Keras on real images (probabilities within 1e-4, maps within
1e-4 relative) and fails otherwise, leaving no file behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from training.architectures import build_model
from training.architectures.common import INPUT_NAME, LOGITS
from training.config import CLASSES, TrainConfig
from training.fused_batchnorm import FusedBatchNormalization
from xray.contract.images import equalize_batch
from xray.contract.manifest import ModelEntry, file_sha256
from xray.contract.model import OnnxModel

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ExportParityError(RuntimeError):
    """The ONNX graph does not reproduce the Keras model."""


class ClassMaps(layers.Layer):
    """Feature maps (b, h, w, k) times a fixed (k, classes) kernel → (b, h, w, classes)."""

    def __init__(self, kernel: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kernel_value = np.asarray(kernel, dtype=np.float32)

    def build(self, input_shape: Any) -> None:
        """Create the fixed kernel."""
        self.kernel = self.add_weight(
            shape=self._kernel_value.shape, initializer="zeros", trainable=False, name="kernel"
        )
        self.kernel.assign(self._kernel_value)

    def call(self, features: Any) -> Any:
        """Weight the feature maps by each class's kernel column."""
        return keras.ops.einsum("bhwk,kc->bhwc", features, self.kernel)


@dataclass(frozen=True)
class ExportModel:
    """The float32 export graph and what the manifest says about it."""

    model: keras.Model
    config: TrainConfig
    features_layer: str


def load_run_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig a run was trained with."""
    return TrainConfig.model_validate_json((run_dir / "config.json").read_text())


def build_export_model(run_dir: Path, weights_file: str = "best.keras") -> ExportModel:
    """Rebuild the run's network in float32 with its trained weights and the three outputs."""
    config = load_run_config(run_dir)
    keras.backend.clear_session()  # free earlier graphs; export in float32 whatever the training policy
    keras.mixed_precision.set_global_policy("float32")
    # A run trained on TensorFlow saved its batch norms as the fused class; only the weights are used.
    trained = keras.models.load_model(
        run_dir / weights_file,
        compile=False,
        custom_objects={"FusedBatchNormalization": FusedBatchNormalization},
    )
    built = build_model(config.arch, config.size, len(CLASSES), dropout=config.dropout, weights="none")
    built.model.set_weights(trained.get_weights())
    logits = built.model.output
    probabilities = layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
    kernel = keras.ops.convert_to_numpy(built.model.get_layer(LOGITS).kernel)
    maps = ClassMaps(kernel, name="class_maps", dtype="float32")(
        built.model.get_layer(built.features_layer).output
    )
    model = keras.Model(built.model.input, [logits, probabilities, maps], name=f"{config.arch}_export")
    return ExportModel(model, config, built.features_layer)


def _convert(model: keras.Model, size: int, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME)]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(path))


def served_model(path: Path, entry: dict[str, Any]) -> OnnxModel:
    """The exported graph at `path` as the service runs it, described by the manifest `entry`."""
    return OnnxModel.open(path, ModelEntry.model_validate({**entry, "sha256": file_sha256(path)}))


def check_parity(model: keras.Model, served: OnnxModel, images: np.ndarray) -> dict[str, float]:
    """Compare Keras with the exported graph, read as the service reads it, on `images` (n, h, w) uint8.

    The service applies the manifest's equalisation itself (`OnnxModel.from_gray`); Keras gets it
    here, as training's batches do (`equalize_batch`).

    Raises:
        ExportParityError: Probabilities differ by more than 1e-4, or the maps by more than 1e-4
            of their largest magnitude.
    """
    outputs = served.run_outputs(served.from_gray(images), with_maps=True)
    keras_input = equalize_batch(images, served.entry.input.equalization).astype(np.float32)[..., None]
    keras_logits, keras_probabilities, keras_maps = (
        keras.ops.convert_to_numpy(t) for t in model(keras_input, training=False)
    )
    probability_diff = float(np.abs(served.calibrated(outputs.logits) - keras_probabilities).max())
    scale = float(np.abs(keras_maps).max()) or 1.0
    map_diff = float(np.abs(np.asarray(outputs.maps) - keras_maps).max()) / scale
    logit_diff = float(np.abs(outputs.logits - keras_logits).max())
    result = {
        "probabilities_max_abs_diff": probability_diff,
        "class_maps_max_rel_diff": map_diff,
        "logits_max_abs_diff": logit_diff,
    }
    if probability_diff > PARITY_TOLERANCE or map_diff > PARITY_TOLERANCE:
        raise ExportParityError(f"ONNX export differs from Keras: {result} (tolerance {PARITY_TOLERANCE})")
    return result


def export_run(
    run_dir: Path,
    models_dir: Path,
    parity_images: np.ndarray,
    *,
    version: str | None = None,
) -> dict[str, Any]:
    """Convert a run's best model to `models_dir/<arch>.onnx`, verify it, and describe it.

    Args:
        run_dir: The training run.
        models_dir: Where the ONNX file goes.
        parity_images: Real images (n, size, size) uint8 for the parity check.
        version: The model version; default: the export's UTC timestamp.

    Returns:
        The manifest entry, without temperature and metrics (the caller adds those).

    Raises:
        ExportParityError: The ONNX graph does not reproduce the Keras model.
    """
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    export = build_export_model(run_dir)
    config = export.config
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{config.arch}.onnx"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    entry: dict[str, Any] = {
        "name": config.arch,
        "version": version or now.strftime("%Y.%m.%d-%H%M%S"),
        "file": target.name,
        "input": {
            "name": INPUT_NAME,
            "height": config.size,
            "width": config.size,
            "channels": 1,
            "dtype": "float32",
            "value_range": [0, 255],
            "layout": "NHWC",
            "equalization": config.equalization,
        },
        "outputs": {"logits": "logits", "probabilities": "probabilities", "class_maps": "class_maps"},
        "gradcam": {"layer": export.features_layer, "output": "class_maps"},
    }
    with tempfile.TemporaryDirectory(dir=models_dir) as scratch:
        candidate = Path(scratch) / target.name
        _convert(export.model, config.size, candidate)
        served = served_model(candidate, entry)
        parity = check_parity(export.model, served, parity_images)
        candidate.replace(target)  # the same bytes: the checksum taken for the check stands
    logger.info("exported %s to %s (parity %s)", config.arch, target, parity)
    return {
        **entry,
        "sha256": served.entry.sha256,
        "metrics": {"export_parity": parity},
        "framework": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_backend_at_export": keras.backend.backend(),
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime_at_export": onnxruntime.__version__,
            "opset": str(OPSET),
        },
        "created": now.isoformat(),
    }
