"""Prometheus metrics: requests by route template and status, latency, batch sizes, index size.

Each app gets its own CollectorRegistry, so several apps in one process (tests) never
collide on metric names in the global registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Paths that match no route share one label: raw paths would grow the label set without bound.
UNMATCHED = "<unmatched>"


class Metrics:
    """The service's metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "retrieval_http_requests", "HTTP requests answered",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "retrieval_http_request_duration_seconds", "Time to answer an HTTP request",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "retrieval_search_batch_size", "Queries embedded together in one model call",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.index_size = Gauge(
            "retrieval_index_vectors", "Passage vectors in the search index", registry=self.registry
        )

    def watch_index(self, size: Callable[[], int]) -> None:
        """Reads the index size at each scrape, so the gauge is never stale."""
        self.index_size.set_function(lambda: float(size()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    Plain ASGI rather than BaseHTTPMiddleware: it adds no task per request, and it reads
    the route template from the scope that FastAPI's router filled in.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        labels = {"method": scope["method"], "route": route_template(scope), "status": str(status)}
        self.metrics.requests.labels(**labels).inc()
        self.metrics.latency.labels(**labels).observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template (/passages/{passage_id}), or UNMATCHED."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
