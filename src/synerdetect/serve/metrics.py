"""Prometheus metrics of the HTTP service, in a registry of their own (one per app: tests build many apps)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
#: The Eq. 10 logit ``s_fake - s_real`` is a difference of cosine similarities (|logit| <= 2); trained detectors put
#: most images within a few tenths of 0, so the buckets are finest there. (With negative buckets prometheus-client
#: exposes no ``_sum``, as OpenMetrics asks: quantiles come from the buckets, histogram_quantile.)
LOGIT_BUCKETS = (-1.0, -0.5, -0.25, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """``synerdetect_*``: requests by endpoint/method/status, request latency, images by outcome, errors by kind,
    batch sizes and durations, queue wait, queue depth, in-flight requests and readiness; for drift, the logits,
    the verdicts, the decision paths and the validation baseline of the calibration."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "synerdetect_requests_total", "HTTP requests answered", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "synerdetect_request_duration_seconds",
            "HTTP request latency (seconds)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "synerdetect_images_total",
            "Images received by /v1/detect, by outcome (scored or error)",
            ["outcome"],
            registry=r,
        )
        self.errors = Counter(
            "synerdetect_errors_total",
            "Errors by kind: per image (not_an_image, too_large, "
            "too_many_pixels, corrupt, ...) and per request (rate_limited, unauthorized, "
            "timeout, bad_request, internal, ...)",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "synerdetect_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "synerdetect_batch_duration_seconds", "Forward pass time (seconds)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "synerdetect_queue_wait_seconds",
            "Time an image waited for its batch (seconds)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("synerdetect_queue_depth", "Images waiting for the model", registry=r)
        self.inflight = Gauge("synerdetect_inflight_requests", "Detect requests being handled", registry=r)
        self.ready = Gauge("synerdetect_ready", "1 once the model is loaded and warmed up", registry=r)
        # Drift: what the traffic looks like to the model, to compare with the validation set (docs/serving.md).
        self.logits = Histogram(
            "synerdetect_logit",
            "Eq. 10 logit (s_fake - s_real) of every scored image, by the path that decided it",
            ["decided_by"],
            buckets=LOGIT_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter(
            "synerdetect_verdicts_total",
            "Verdicts returned (real, fake, uncertain), by source (model or a trusted c2pa manifest)",
            ["verdict", "source"],
            registry=r,
        )
        self.decided = Counter(
            "synerdetect_decided_total",
            "Scored images by the path that decided them (full: Eq. 10 with the inversion; perceptual: the CLIP "
            "branch alone, under --mode cascade or perceptual)",
            ["path"],
            registry=r,
        )
        self.validation_share = Gauge(
            "synerdetect_validation_share",
            "Share of each verdict on the validation set of the loaded calibration (NaN: not recorded), the "
            "baseline for drift alerts",
            ["verdict"],
            registry=r,
        )

    def set_validation_shares(self, shares: dict[str, float | None]) -> None:
        for verdict, share in shares.items():
            self.validation_share.labels(verdict).set(float("nan") if share is None else share)

    def on_records(self, records: list[dict]) -> None:
        """Count the verdicts, decision paths and logits of scored records."""
        for rec in records:
            if rec.get("logit") is None:
                continue
            path = rec.get("decided_by") or "full"
            self.logits.labels(path).observe(float(rec["logit"]))
            self.decided.labels(path).inc()
            self.verdicts.labels(str(rec.get("verdict")), str(rec.get("verdict_source") or "model")).inc()

    def bind_queue_depth(self, fn: Callable[[], float]) -> None:
        self.queue_depth.set_function(fn)

    def on_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        for w in waits:
            self.queue_wait.observe(w)

    def render(self) -> bytes:
        return generate_latest(self.registry)
