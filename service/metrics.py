"""Prometheus metrics: request counts and latency by route and status, engine op counts, the plan cache.

Each app owns its registry (so several apps in one process, as in tests, never
collide); ``GET /metrics`` renders it in the text exposition format.
"""

from __future__ import annotations

from collections import Counter as OpCounts

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUILD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
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
        # The plan cache (service.plans). Guard failures and fallbacks are engine.compile's: its
        # explain() says when a replay's guard failed (the call ran eagerly and recorded another
        # variant) or the function could not be compiled (it runs eagerly); they are counted here.
        self.plan_hits = Counter("gradserve_plan_cache_hits", "requests whose function plan was cached",
                                 registry=self.registry)
        self.plan_misses = Counter("gradserve_plan_cache_misses", "requests whose function plan was built",
                                   registry=self.registry)
        self.plan_evictions = Counter("gradserve_plan_cache_evictions", "plans dropped to keep the cache in bounds",
                                      registry=self.registry)
        self.plan_guard_failures = Counter("gradserve_plan_guard_failures",
                                           "replays whose guard failed (run eagerly, variant recorded)",
                                           registry=self.registry)
        self.plan_fallbacks = Counter("gradserve_plan_fallbacks", "plan runs that fell back to the eager engine",
                                      registry=self.registry)
        self.plan_entries = Gauge("gradserve_plan_cache_entries", "plans held in the cache", registry=self.registry)
        self.plan_build_seconds = Histogram("gradserve_plan_build_seconds", "time to build (and compile) one plan",
                                            buckets=BUILD_BUCKETS, registry=self.registry)
        self._children: dict = {}
        self._op_children: dict = {}

    def count_plan_calls(self, calls) -> None:
        """Feed the guard-failure and fallback counters from one request's ``CallTally``."""
        if calls["guard_failed"]:
            self.plan_guard_failures.inc(calls["guard_failed"])
        if calls["eager"]:
            self.plan_fallbacks.inc(calls["eager"])

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
        children = self._op_children  # labels() once per op name, as in observe_request
        for op, n in counts.items():
            child = children.get(op)
            if child is None:
                child = children[op] = self.engine_ops.labels(op)
            child.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
