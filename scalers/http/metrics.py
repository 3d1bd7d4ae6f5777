"""The interceptor's Prometheus metrics (served on its admin port at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scalers.http.routes import Key

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_COLD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
_CONCURRENCY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ProxyMetrics:
    """Request duration, concurrency seen at arrival and cold-start wait, per HTTPScaledObject."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        labels = ("namespace", "name")
        self.requests = Counter(
            "tidal_interceptor_requests",
            "Requests answered, by status code.",
            (*labels, "code"),
            registry=r,
        )
        self.duration = Histogram(
            "tidal_interceptor_request_duration_seconds",
            "Arrival to the end of the answer, holding included.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.concurrency_seen = Histogram(
            "tidal_interceptor_concurrency",
            "Requests in flight for the target when a request arrives (it included).",
            labels,
            buckets=_CONCURRENCY_BUCKETS,
            registry=r,
        )
        self.cold_start_wait = Histogram(
            "tidal_interceptor_cold_start_wait_seconds",
            "How long a request was held for a ready backend, by outcome "
            "(forwarded, failover, timeout, queue_full, placeholder).",
            (*labels, "outcome"),
            buckets=_COLD_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(  # read at scrape time (`set_function`), not per request
            "tidal_interceptor_in_flight", "Requests in flight on this replica.", registry=r
        )
        self.stream_subscribers = Gauge(
            "tidal_interceptor_stream_subscribers",
            "Daemon feeds connected to this replica's push stream.",
            registry=r,
        )

        # Label children per target, looked up once (labels() costs more than observe()).
        self._children: dict[Key, tuple[Histogram, Histogram]] = {}
        self._codes: dict[tuple[Key, int], Counter] = {}

    def _of(self, key: Key) -> tuple[Histogram, Histogram]:
        children = self._children.get(key)
        if children is None:
            children = (self.concurrency_seen.labels(*key), self.duration.labels(*key))
            self._children[key] = children
        return children

    def concurrency(self, key: Key, in_flight: int) -> None:
        self._of(key)[0].observe(in_flight)

    def request(self, key: Key, code: int, seconds: float) -> None:
        counter = self._codes.get((key, code))
        if counter is None:
            counter = self._codes[(key, code)] = self.requests.labels(*key, str(code))
        counter.inc()
        self._of(key)[1].observe(seconds)

    def cold_start(self, key: Key, outcome: str, seconds: float) -> None:
        self.cold_start_wait.labels(*key, outcome).observe(seconds)
