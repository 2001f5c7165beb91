"""Every thread pool of the serving process, planned in one place from the CPU quota.

A request's work runs on four kinds of threads, each sized here and nowhere else:

* `jobs`: decoding uploads and the non-batched inference jobs (`InferenceScheduler`),
  `XRAY_INFERENCE_WORKERS` threads behind a bounded admission queue;
* `batches`: one thread that runs the micro-batches, one batch at a time, since a batch
  already spreads over every core the models have;
* `models`: with `XRAY_MODEL_EXECUTION=parallel`, the threads that run the models of one batch
  side by side (`SideBySide`), as many as the sessions' intra-op threads fit in a worker's share;
* `render`: the threads that encode one request's PNGs side by side, one per CPU of a worker's
  share.

The models' pool belongs to the loaded models (`Predictor`), which may outlive one app; the
others belong to the running app and are shut down with it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.core.config import Settings
from service.core.cpu import available_cpus
from xray.contract.model import ThreadConfig


class Pool(ThreadPoolExecutor):
    """A named thread pool that says how many threads it has."""

    def __init__(self, threads: int, name: str) -> None:
        """Create the pool; no thread starts before its first task."""
        if threads < 1:
            raise ValueError("a pool needs at least one thread")
        super().__init__(max_workers=threads, thread_name_prefix=name)
        self.threads = threads


@dataclass(frozen=True)
class ConcurrencyPlan:
    """How many threads each pool gets, and each onnxruntime session.

    Attributes:
        share: The CPUs of one inference worker (the CPU quota shared among `jobs`).
        jobs: Threads of the decode and inference job pool.
        session_threads: Intra-op threads of each onnxruntime session.
        model_threads: Threads running the models of a batch side by side (1: one after another).
    """

    share: int
    jobs: int
    session_threads: ThreadConfig
    model_threads: int

    @property
    def render_threads(self) -> int:
        """Threads encoding one request's PNGs: one per CPU of a worker's share."""
        return self.share

    @classmethod
    def from_settings(cls, settings: Settings, models: int = 1, cpus: int | None = None) -> ConcurrencyPlan:
        """Plan the pools for `models` models under `settings` and the CPU quota.

        One after another, each session gets a worker's whole CPU share; side by side, the share
        is split among the sessions, at least one thread each, and as many model threads run as
        fit the share (two cores, three models: one thread per session, two model threads).
        """
        quota = cpus if cpus is not None else available_cpus()
        share = max(1, quota // settings.inference_workers)
        parallel = settings.model_execution == "parallel"
        if settings.intra_op_threads is not None:
            intra_op = settings.intra_op_threads
        else:
            intra_op = max(1, share // max(1, models)) if parallel else share
        model_threads = max(1, share // intra_op) if parallel and models > 1 else 1
        return cls(
            share=share,
            jobs=settings.inference_workers,
            session_threads=ThreadConfig(intra_op=intra_op),
            model_threads=model_threads,
        )

    def model_pool(self) -> Pool | None:
        """The pool that runs the models of a batch side by side; None when they run one after another."""
        return Pool(self.model_threads, "xray-model-run") if self.model_threads > 1 else None


class ServicePools:
    """The running app's pools: jobs, batches and rendering (threads start on first use)."""

    def __init__(self, plan: ConcurrencyPlan) -> None:
        """Create the pools of `plan`."""
        self.jobs = Pool(plan.jobs, "xray-infer")
        self.batches = Pool(1, "xray-models")
        self.render = Pool(plan.render_threads, "xray-render") if plan.render_threads > 1 else None

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop every pool; with `wait`, after the work already given to them."""
        for pool in (self.jobs, self.batches, self.render):
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=not wait)
