"""Prometheus metrics (names in docs/api.md), on a registry owned by each app instance.

Labels hold only bounded, non-identifying values: route templates, status codes, model and
class names. Never a file name, a UID, or anything from the image.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.inference.predictor import Prediction

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        """Create the metrics on a fresh registry."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "xray_requests", "HTTP requests answered.", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "xray_request_seconds",
            "HTTP request latency.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "xray_inference_seconds",
            "Time one model's session ran for one batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "xray_batch_size", "Images per inference batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.predictions = Counter(
            "xray_predictions",
            "Predicted labels, per model and per ensemble (classic, confidence).",
            ["model", "label"],
            registry=r,
        )
        self.uncertain = Counter(
            "xray_uncertain",
            "Ensemble decisions marked uncertain (each counted once, whatever its reasons).",
            ["ensemble"],
            registry=r,
        )
        self.uncertain_reasons = Counter(
            "xray_uncertain_reasons",
            "Reasons of the uncertain ensemble decisions (low_confidence, out_of_distribution, "
            "models_disagree); a decision with two reasons counts under each.",
            ["ensemble", "reason"],
            registry=r,
        )
        self.out_of_distribution = Counter(
            "xray_out_of_distribution",
            "Images the input check found unlike the chest radiographs the models were trained on "
            "(counted whether they were answered or refused).",
            registry=r,
        )
        self.model_info = Gauge(
            "xray_model_info",
            "Loaded models: version and execution provider in use.",
            ["model", "version", "provider"],
            registry=r,
        )
        self.ready = Gauge("xray_ready", "1 when every model is loaded and warmed up.", registry=r)
        self.queue_depth = Gauge(
            "xray_queue_depth", "Requests admitted to decoding and inference.", registry=r
        )
        self.queue_capacity = Gauge("xray_queue_capacity", "Most requests admitted at once.", registry=r)
        self.pacs_operations = Counter(
            "xray_pacs_operations",
            "Calls to the PACS: `retrieve` (WADO-RS) and `store` (STOW-RS of the results), by outcome "
            "(`ok` or the problem slug, e.g. `pacs-unavailable`, `pacs-timeout`).",
            ["operation", "outcome"],
            registry=r,
        )

    def track_queue(self, depth: Callable[[], float], capacity: int) -> None:
        """Read the queue depth from `depth` at every scrape."""
        self.queue_depth.set_function(depth)
        self.queue_capacity.set(capacity)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.request_seconds.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, predictions: list[Prediction]) -> None:
        """Record one inference batch: its size, each model's time, and every decision."""
        if not predictions:
            return
        self.batch_size.observe(len(predictions))
        for model, seconds in predictions[0].timings.items():
            self.inference_seconds.labels(model=model).observe(seconds)
        for prediction in predictions:
            for name, decision in (*prediction.models.items(), *prediction.ensembles.items()):
                self.predictions.labels(model=name, label=prediction.classes[decision.label_index]).inc()
            for name, decision in prediction.ensembles.items():
                if decision.uncertain:
                    self.uncertain.labels(ensemble=name).inc()
                for reason in decision.uncertain_reasons:
                    self.uncertain_reasons.labels(ensemble=name, reason=reason).inc()
            if not prediction.input_check.in_distribution:
                self.out_of_distribution.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
