"""Prometheus metrics: requests and latencies per route, adaptations, cache hits and misses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.adaptations = Counter(
            "adaptations_total", "Tasks adapted", ["model"], registry=self.registry
        )
        self.adapt_seconds = Histogram(
            "adaptation_duration_seconds", "Inner-loop time", ["model"], registry=self.registry
        )
        self.cache_hits = Counter(
            "adapted_cache_hits_total", "Predicts served from the cache", registry=self.registry
        )
        self.cache_misses = Counter(
            "adapted_cache_misses_total",
            "Predicts that loaded weights from the database",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "rate_limited_total",
            "Requests refused for a client over its rate",
            registry=self.registry,
        )
        self.rejected = Counter(
            "work_rejected_total",
            "Adaptations and predictions refused: over the pool's capacity, or over the "
            "client's share of it",
            ["pool", "reason"],
            registry=self.registry,
        )
