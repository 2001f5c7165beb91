"""AdamW whose update runs on TensorFlow's fused kernels, for training on the TensorFlow backend.

Keras 3's AdamW updates each variable with a chain of element-wise operations (about a dozen
passes over the variable, its two moments and the gradient), clips each gradient with four more
and decays the weights with three. On a CPU these passes are bound by memory, not arithmetic, and
bfloat16 does not shorten them. `ResourceApplyAdam` updates a variable and its moments in one
pass, the clip needs one reduction and a scaling only when it clips, and the decay one pass.
Measured here for InceptionResNetV2 (54 M parameters): the update alone 350 → 190–300 ms (under
load); whole training steps at 224, batch 16, two copies trained in alternation in one process,
float32 +4.6 %, bfloat16 +7.0 %. Same arithmetic as Keras's optimizer (up to float rounding),
same variables and configuration, so checkpoints are interchangeable with
`keras.optimizers.AdamW`.

Under another backend, a distribution strategy, sparse gradients or `amsgrad`, Keras's own code
runs.
"""

from __future__ import annotations

from typing import Any

import keras


def _fusable() -> bool:
    """Whether the fused kernels apply: the TensorFlow backend, outside a distribution strategy."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    # Under a mirrored strategy each replica's update goes through the strategy; keep Keras's code.
    return not tf.distribute.has_strategy()


@keras.saving.register_keras_serializable(package="xray")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with its clip, weight decay and update on fused kernels."""

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        if not (self.clipnorm and self.clipnorm > 0) or not _fusable():
            return super()._clip_gradients(grads)  # type: ignore[no-any-return]
        import tensorflow as tf

        def clip(gradient: Any) -> Any:
            # Keras scales by clipnorm / max(norm, clipnorm): a no-op unless the norm is larger.
            norm = tf.math.reduce_euclidean_norm(gradient)
            limit = tf.cast(self.clipnorm, gradient.dtype)
            return tf.cond(norm > limit, lambda: gradient * (limit / norm), lambda: tf.identity(gradient))

        return [None if gradient is None else clip(gradient) for gradient in grads]

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        if self.weight_decay is None or not _fusable():
            super()._apply_weight_decay(variables)
            return
        import tensorflow as tf

        for variable in variables:
            if not self._use_weight_decay(variable):
                continue
            value = variable.value if isinstance(variable, keras.Variable) else variable
            # Decoupled decay, var -= lr * wd * var, as one in-place pass.
            rate = tf.cast(self.learning_rate, value.dtype) * tf.cast(self.weight_decay, value.dtype)
            tf.raw_ops.ResourceApplyGradientDescent(var=value.handle, alpha=rate, delta=value.read_value())

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Adam's update of one variable and its two moments."""
        if not _fusable():
            super().update_step(gradient, variable, learning_rate)
            return
        import tensorflow as tf

        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        # The kernel computes Keras's update: lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t),
        # m and v as exponential averages, var -= lr_t * m / (sqrt(v) + epsilon).
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def fuse_optimizer(model: keras.Model) -> bool:
    """Run `model`'s AdamW on the fused kernels from now on (a checkpoint reloaded from before them).

    The optimizer keeps its variables and configuration; only its class changes. Returns whether
    it changed.
    """
    if type(model.optimizer) is not keras.optimizers.AdamW:
        return False
    model.optimizer.__class__ = FusedAdamW
    return True
