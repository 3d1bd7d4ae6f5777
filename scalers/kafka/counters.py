"""What a cluster has sent, for benchmarks and tests: `KafkaCluster` is one of these."""

from __future__ import annotations

from collections import Counter


class Counters:
    """``requests`` counts every Kafka request the sample rounds send (``requests_by_api`` per API
    name) and ``rounds`` the coalesced rounds, so a benchmark can report requests per tick. The
    push watcher's requests are counted apart: ``watch_requests`` / ``watch_requests_by_api``,
    ``watch_rounds`` (completed reads) and ``last_watch_round`` (the requests of the last one).
    """

    def __init__(self) -> None:
        self.requests = 0
        self.requests_by_api: Counter[str] = Counter()
        self.rounds = 0
        self.watch_requests = 0
        self.watch_requests_by_api: Counter[str] = Counter()
        self.watch_rounds = 0
        self.last_watch_round: Counter[str] = Counter()
