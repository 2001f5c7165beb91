"""Batch normalization through TensorFlow's fused kernel, for training on the TensorFlow backend.

Keras 3's `BatchNormalization` is a chain of element-wise operations, and under a mixed policy it
casts every activation up to float32 and back: InceptionResNetV2 has about 200 of them, and in
bfloat16 they cost as much as the convolutions save. `tf.compat.v1.nn.fused_batch_norm` takes
bfloat16 activations with float32 statistics in one kernel (oneDNN on the CPU). Measured here on
InceptionResNetV2 at 224, `train_on_batch`, batch 16 / 32 images per second: float32 8.22 / 8.60,
fused float32 8.37 / 9.35, bfloat16 11.97 / -, fused bfloat16 13.91 / 15.74.

oneDNN's bfloat16 batch-norm kernels work on blocks of 16 channels; a layer whose channel count
is not a multiple of 16 falls to its generic kernel (`nspc_bnorm:any`), which took 83 ms of a
200 ms `scratch` step (its 24-channel stem, 112×112) and 98 ms over EfficientNetV2B2's 56-, 104-
and 120-channel layers. Those layers normalise in float32 (two casts) and hand back bfloat16.

The layers keep their class's weights and configuration, so a checkpoint holds the same variables
and the export (which rebuilds the plain network) is unchanged. Other backends keep Keras's layer.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

#: oneDNN's fast bfloat16 batch-norm kernels need the channel count to be a multiple of this.
BFLOAT16_CHANNEL_BLOCK = 16


@keras.saving.register_keras_serializable(package="xray")
class FusedBatchNormalization(layers.BatchNormalization):
    """`BatchNormalization` over the last axis of a 4-D input, computed by the fused kernel."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        """Normalise with batch statistics (training) or the moving ones (inference)."""
        import tensorflow as tf

        if mask is not None or len(inputs.shape) != 4 or self.axis not in (-1, 3, [3], [-1]):
            return super().call(inputs, training=training, mask=mask)
        if inputs.dtype == tf.bfloat16 and inputs.shape[-1] % BFLOAT16_CHANNEL_BLOCK:
            return tf.cast(self._normalize(tf.cast(inputs, tf.float32), training), inputs.dtype)
        return self._normalize(inputs, training)

    def _normalize(self, inputs: Any, training: Any) -> Any:
        import tensorflow as tf

        statistics_dtype = "float32"
        scale = tf.cast(self.gamma, statistics_dtype) if self.scale else tf.ones_like(self.moving_mean)
        offset = tf.cast(self.beta, statistics_dtype) if self.center else tf.zeros_like(self.moving_mean)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the unbiased variance; Keras's layer averages the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), statistics_dtype)
            variance = variance * (count - 1.0) / count
            # The same exponential moving averages as Keras's layer.
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            scale,
            offset,
            mean=tf.cast(self.moving_mean, statistics_dtype),
            variance=tf.cast(self.moving_variance, statistics_dtype),
            epsilon=self.epsilon,
            is_training=False,
        )
        return outputs


def fuse_batch_norms(model: keras.Model) -> int:
    """On the TensorFlow backend, compute every batch-norm layer of `model` with the fused kernel.

    The layers (nested models' too) become `FusedBatchNormalization` in place: same weights,
    same configuration. Returns how many were changed (0 on other backends).
    """
    if keras.backend.backend() != "tensorflow":
        return 0
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
            changed += 1
    return changed
