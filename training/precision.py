"""Which floating-point precision training computes in, chosen from what the hardware runs natively.

`bfloat16` (Keras' `mixed_bfloat16` policy) halves the memory traffic and doubles the rate of
dense convolutions on CPUs with AVX-512 BF16 or AMX and on GPUs of compute capability 8.0 or
later. `float16` is only worth it on GPUs with tensor cores: a CPU emulates it, slowly. Variables
stay float32 under either policy, and the networks' `logits` layer computes in float32, so the
loss, the saved weights and the float32 export are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16", "float16")
#: Precision → Keras dtype policy.
POLICIES: dict[str, str] = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
#: CPU flags (as /proc/cpuinfo names them) under which bfloat16 arithmetic is native.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Accelerator:
    """One compute device training can run on."""

    kind: Literal["cpu", "gpu"]
    name: str
    bf16: bool


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision used, and why."""

    precision: str
    reason: str

    @property
    def policy(self) -> str:
        """The Keras dtype policy name."""
        return POLICIES[self.precision]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _gpus_of_backend(backend: str) -> list[Accelerator]:
    """The GPUs the Keras backend sees, each with whether it computes bfloat16 natively."""
    found: list[Accelerator] = []
    if backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                capability = float(getattr(device, "compute_capability", "0") or 0)
                found.append(Accelerator("gpu", device.device_kind, capability >= 8.0))
    elif backend == "torch":
        import torch

        for index in range(torch.cuda.device_count()):
            major, _ = torch.cuda.get_device_capability(index)
            found.append(Accelerator("gpu", torch.cuda.get_device_name(index), major >= 8))
    elif backend == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            major = (details.get("compute_capability") or (0, 0))[0]
            found.append(Accelerator("gpu", str(details.get("device_name", device.name)), major >= 8))
    return found


def detect_accelerators(backend: str | None = None, flags: Iterable[str] | None = None) -> list[Accelerator]:
    """The devices training would run on: the backend's GPUs if any, else the CPU.

    Args:
        backend: The Keras backend; default: the one in use.
        flags: The CPU's flags; default: read from /proc/cpuinfo.
    """
    if backend is None:
        import keras

        backend = keras.backend.backend()
    gpus = _gpus_of_backend(backend)
    if gpus:
        return gpus
    cpu = frozenset(flags) if flags is not None else cpu_flags()
    native = sorted(cpu.intersection(CPU_BF16_FLAGS))
    return [Accelerator("cpu", "cpu" + (f" ({', '.join(native)})" if native else ""), bool(native))]


def choose_precision(
    requested: Precision, accelerators: Callable[[], list[Accelerator]] = detect_accelerators
) -> PrecisionChoice:
    """Resolve `auto` to bfloat16 where every device computes it natively, else float32.

    An explicit choice is kept as asked (with a warning where the hardware only emulates it).
    The choice and its reason are logged.
    """
    devices = accelerators()
    names = ", ".join(device.name for device in devices)
    all_bf16 = bool(devices) and all(device.bf16 for device in devices)
    if requested == "auto":
        if all_bf16:
            choice = PrecisionChoice("bfloat16", f"auto: bfloat16 is native on {names}")
        else:
            lacking = (
                "AVX-512 BF16 or AMX" if devices and devices[0].kind == "cpu" else "compute capability 8.0"
            )
            choice = PrecisionChoice(
                "float32", f"auto: float32, since {names} lacks native bfloat16 ({lacking})"
            )
    else:
        choice = PrecisionChoice(requested, f"asked for {requested} on {names}")
        emulated = (requested == "bfloat16" and not all_bf16) or (
            requested == "float16" and any(device.kind == "cpu" for device in devices)
        )
        if emulated:
            logger.warning(
                "%s is emulated on %s: expect training to be slower than float32", requested, names
            )
    logger.info("precision: %s (%s)", choice.precision, choice.reason)
    return choice


def float32_depthwise(model: Any) -> int:
    """Under bfloat16 on the TensorFlow backend, compute `model`'s depthwise convolutions in float32.

    oneDNN has no fast bfloat16 kernels for them on AVX-512 BF16 CPUs: measured here on
    EfficientNetV2B2 (224 px, batch 16), the backward pass of a stride-2 depthwise convolution
    took 50-200 ms in bfloat16 against 1 ms in float32, and the weight gradients of the others
    twice as long. The layers' variables are float32 either way; only their compute dtype
    changes, so checkpoints and the float32 export are unchanged. Returns how many were changed
    (0 under another policy or backend, or with a GPU).
    """
    import keras

    if keras.backend.backend() != "tensorflow" or _gpus_of_backend("tensorflow"):
        return 0  # measured on oneDNN, TensorFlow's CPU kernels
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.DepthwiseConv2D) and layer.compute_dtype == "bfloat16":
            layer.dtype_policy = "float32"
            changed += 1
    return changed
