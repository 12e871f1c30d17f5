"""Prometheus metrics: request counts and latency by route and status, engine op counts.

Each app owns its registry (so several apps in one process, as in tests, never
collide); ``GET /metrics`` renders it in the text exposition format.
"""

from __future__ import annotations

from collections import Counter as OpCounts

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's collectors, in one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gradserve_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gradserve_request_duration_seconds", "time to answer an HTTP request", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("gradserve_requests_in_flight", "HTTP requests being answered", registry=self.registry)
        self.engine_ops = Counter("gradserve_engine_ops", "engine table ops run by requests", ["op"],
                                  registry=self.registry)
        self._children: dict = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per (method, route, status): prometheus_client's
        # labels() validates and locks on every call, and every request comes through here.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                              self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def count_ops(self, counts: OpCounts) -> None:
        for op, n in counts.items():
            self.engine_ops.labels(op).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
