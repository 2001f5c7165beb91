"""CPU quota detection for thread sizing."""

from __future__ import annotations

from pathlib import Path

from service.core.cpu import available_cpus, cgroup_cpu_quota


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(v2=write(tmp_path / "cpu.max", "150000 100000\n")) == 1.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(v2=write(tmp_path / "cpu.max", "max 100000\n")) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    quota = cgroup_cpu_quota(
        v2=tmp_path / "absent",
        v1_quota=write(tmp_path / "q", "200000"),
        v1_period=write(tmp_path / "p", "100000"),
    )
    assert quota == 2.0


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    quota = cgroup_cpu_quota(
        v2=tmp_path / "absent",
        v1_quota=write(tmp_path / "q", "-1"),
        v1_period=write(tmp_path / "p", "100000"),
    )
    assert quota is None


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(v2=tmp_path / "a", v1_quota=tmp_path / "b", v1_period=tmp_path / "c") is None


def test_available_cpus_is_positive() -> None:
    assert available_cpus() >= 1
