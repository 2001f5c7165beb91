"""Execution providers: the names `XRAY_PROVIDERS` understands and how they map to a build's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xray.contract.errors import ProviderUnavailableError

CPU = "CPUExecutionProvider"

#: Execution providers understood by `XRAY_PROVIDERS`, short name → onnxruntime name.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


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
