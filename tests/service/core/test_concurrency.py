"""The serving plan: every pool and session sized from the CPU quota in one place."""

from __future__ import annotations

import threading

import pytest

from service.core.concurrency import ConcurrencyPlan, ServicePools
from service.core.config import Settings


@pytest.mark.parametrize(
    ("execution", "cpus", "models", "threads", "model_threads"),
    [
        ("parallel", 2, 3, 1, 2),
        ("parallel", 8, 3, 2, 4),
        ("parallel", 12, 3, 4, 3),
        ("sequential", 2, 3, 2, 1),
        ("parallel", 2, 1, 2, 1),
    ],
)
def test_session_threads_split_the_cpu_quota_when_the_models_run_side_by_side(
    execution: str, cpus: int, models: int, threads: int, model_threads: int
) -> None:
    settings = Settings(model_execution=execution)  # type: ignore[arg-type]
    plan = ConcurrencyPlan.from_settings(settings, models, cpus=cpus)
    assert plan.session_threads.intra_op == threads
    assert plan.model_threads == model_threads
    assert plan.render_threads == cpus
    fixed = Settings(model_execution=execution, intra_op_threads=5)  # type: ignore[arg-type]
    assert ConcurrencyPlan.from_settings(fixed, models, cpus=cpus).session_threads.intra_op == 5


def test_each_worker_gets_its_share_of_the_quota() -> None:
    settings = Settings(inference_workers=2, model_execution="sequential")
    plan = ConcurrencyPlan.from_settings(settings, 3, cpus=8)
    assert plan.jobs == 2
    assert plan.session_threads.intra_op == 4
    assert plan.render_threads == 4


def test_the_pools_are_named_and_sized_by_the_plan() -> None:
    plan = ConcurrencyPlan.from_settings(Settings(model_execution="parallel"), 3, cpus=2)
    pools = ServicePools(plan)
    model_pool = plan.model_pool()
    try:
        assert pools.jobs.threads == plan.jobs
        assert pools.batches.threads == 1
        assert pools.render is not None
        assert pools.render.threads == 2
        assert model_pool is not None
        assert model_pool.threads == 2
        every = (pools.jobs, pools.batches, pools.render, model_pool)
        names = {pool.submit(lambda: threading.current_thread().name).result() for pool in every}
        assert {name.rsplit("_", 1)[0] for name in names} == {
            "xray-infer",
            "xray-models",
            "xray-render",
            "xray-model-run",
        }
    finally:
        pools.shutdown()
        model_pool.shutdown()


def test_one_cpu_renders_on_the_request_thread() -> None:
    plan = ConcurrencyPlan.from_settings(Settings(), 3, cpus=1)
    assert plan.render_threads == 1
    assert ServicePools(plan).render is None
    assert plan.model_pool() is None
