"""The training profile: op types' self times per precision, and the oneDNN/other split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.train_profile import main, op_self_times

_PS_PER_MS = 10**9


def _xspace(events: list[tuple[str, int, int]], line_name: str = "tf_Compute/1") -> bytes:
    """A serialised profiler XSpace with one host line holding `events` (name, start ms, length ms)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    line = plane.lines.add(name=line_name)
    for index, (name, start, length) in enumerate(events, start=1):
        plane.event_metadata[index].id = index
        plane.event_metadata[index].name = name
        line.events.add(metadata_id=index, offset_ps=start * _PS_PER_MS, duration_ps=length * _PS_PER_MS)
    return space.SerializeToString()


def test_each_op_type_is_charged_its_own_time_without_the_ops_inside_it() -> None:
    trace = _xspace([
        ("ExecutorState::Process", 0, 100),  # bookkeeping around the ops: never charged
        ("train_step:PartitionedCall", 10, 80),
        ("conv:_MklNativeConv2D", 20, 30),
        ("relu:Relu", 60, 10),
        ("relu_1:Relu", 95, 4),
    ])  # fmt: skip
    times = op_self_times(trace, steps=2)
    assert times == {"PartitionedCall": 20.0, "_MklNativeConv2D": 15.0, "Relu": 7.0}


def test_threads_other_than_the_executors_are_left_out() -> None:
    assert op_self_times(_xspace([("conv:_MklNativeConv2D", 0, 5)], line_name="python"), steps=1) == {}


def test_a_precision_given_twice_is_refused_before_anything_runs() -> None:
    with pytest.raises(SystemExit):
        main(["--arch", "scratch", "--size", "32", "--precision", "float32", "--precision", "float32"])


@pytest.mark.slow
def test_profile_splits_a_real_step_into_onednn_kernels_and_other_ops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([
        "--arch", "scratch", "--size", "32", "--batch", "4", "--steps", "1", "--top", "3",
        "--inter-op-threads", "0",  # TensorFlow's default: this process may have started it already
        "--precision", "float32", "--precision", "bfloat16", "--json", str(tmp_path / "rows.json"),
    ])  # fmt: skip
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["precisions"] == ["float32", "bfloat16"]
    rows = {row["op_type"]: row for row in printed["rows"]}
    assert len(printed["rows"]) == 3 + 1 + 3  # the top 3, the folded rest, the three totals
    onednn, other, everything = (rows[label] for label in ("oneDNN kernels (_Mkl*)", "other ops", "all ops"))
    for precision in ("float32", "bfloat16"):
        assert onednn[f"{precision}_ms"] > 0  # the convolutions ran on oneDNN's kernels
        assert other[f"{precision}_ms"] > 0
        assert everything[f"{precision}_ms"] == pytest.approx(
            onednn[f"{precision}_ms"] + other[f"{precision}_ms"], abs=0.2
        )
    assert everything["bfloat16_speedup"] > 0
    assert "float32_speedup" not in everything  # the first precision is the reference
    assert json.loads((tmp_path / "rows.json").read_text()) == printed["rows"]
