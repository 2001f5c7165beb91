"""Choosing the training precision from the hardware."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.precision import Accelerator, choose_precision, cpu_flags, detect_accelerators

CPU_WITH_BF16 = [Accelerator("cpu", "cpu (avx512_bf16)", True)]
CPU_WITHOUT = [Accelerator("cpu", "cpu", False)]
GPU_AMPERE = [Accelerator("gpu", "NVIDIA A100", True)]
GPU_TURING = [Accelerator("gpu", "Tesla T4", False)]


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (CPU_WITH_BF16, "bfloat16"),
        (CPU_WITHOUT, "float32"),
        (GPU_AMPERE, "bfloat16"),
        (GPU_TURING, "float32"),
    ],
    ids=["cpu-bf16", "cpu-plain", "gpu-sm80", "gpu-sm75"],
)
def test_auto_picks_bfloat16_only_where_it_is_native(devices: list[Accelerator], expected: str) -> None:
    choice = choose_precision("auto", lambda: devices)
    assert choice.precision == expected
    assert choice.policy == {"bfloat16": "mixed_bfloat16", "float32": "float32"}[expected]


def test_auto_falls_back_to_float32_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training.precision"):
        choice = choose_precision("auto", lambda: CPU_WITHOUT)
    assert choice.precision == "float32"
    assert "AVX-512 BF16 or AMX" in choice.reason
    assert any(
        "float32" in record.message and "lacks native bfloat16" in record.message for record in caplog.records
    )


def test_an_explicit_choice_is_kept_and_emulation_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.precision"):
        assert choose_precision("float16", lambda: CPU_WITH_BF16).policy == "mixed_float16"
        assert choose_precision("bfloat16", lambda: CPU_WITHOUT).precision == "bfloat16"
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert choose_precision("float32", lambda: CPU_WITH_BF16).policy == "float32"


def test_cpu_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "absent") == frozenset()
    cpu = detect_accelerators("numpy", flags={"avx512f"})
    assert cpu == [Accelerator("cpu", "cpu", False)]
    assert detect_accelerators("numpy", flags={"amx_bf16"})[0].bf16


def test_configs_from_before_precision_still_load() -> None:
    assert TrainConfig(arch="scratch", mixed_precision=True).precision == "float16"  # type: ignore[call-arg]
    assert TrainConfig(arch="scratch", mixed_precision=False).precision == "float32"  # type: ignore[call-arg]
    assert TrainConfig(arch="scratch").precision == "auto"
