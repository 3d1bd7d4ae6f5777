"""What a cluster remembers between rounds: the watched topics' metadata and group coordinators.

Metadata is read for the watched topics only: cached, refreshed every ``metadata_max_age``
seconds, after an error (`Connections.metadata_stale`), or when a new topic is asked for.
Coordinators are cached per group; unknown ones are found with one batched FindCoordinator v4
request (one v1 request per group on old brokers) and forgotten when they may have moved.
"""

from __future__ import annotations

import asyncio

import aiokafka.errors as kafka_errors
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.metadata import MetadataRequest

from scalers.kafka.connections import Connections
from scalers.kafka.failures import Failure, broker_error
from scalers.kafka.protocol import (
    API_FIND_COORDINATOR,
    COORDINATOR_GONE,
    FindCoordinators,
    supports,
)


class Metadata:
    """The watched topics' partitions and their leaders."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns
        self.topics: dict[str, dict[int, int]] = {}  # topic -> partition -> leader node
        self._used: set[str] = set()  # topics asked for since the last full metadata refresh
        self._at: float | None = None

    async def ensure(self, topics: set[str]) -> dict[str, Failure]:
        """Make `topics` known; one Metadata request at most. Returns per-topic failures."""
        conns = self._conns
        now = asyncio.get_running_loop().time()
        self._used |= topics
        fresh = (
            self._at is not None
            and now - self._at < conns.settings.metadata_max_age
            and not conns.metadata_stale
            and conns.brokers
        )
        if not fresh:
            ask, self._used = set(self._used), set(topics)
            self.topics = {t: p for t, p in self.topics.items() if t in ask}
            failures = await self._read(ask)
            self._at, conns.metadata_stale = now, False
            return {t: f for t, f in failures.items() if t in topics}
        missing = topics - self.topics.keys()
        if not missing:
            return {}
        return await self._read(missing)

    async def _read(self, topics: set[str]) -> dict[str, Failure]:
        conn = await self._conns.any()
        request = MetadataRequest(sorted(topics), allow_auto_topic_creation=False)
        response = await self._conns.send(conn, request, "Metadata")
        self._conns.adopt_brokers(response.brokers)
        failures: dict[str, Failure] = {}
        for entry in response.topics:
            code, name, partitions = entry[0], entry[1], entry[-1]
            if code:
                self.topics.pop(name, None)
                failures[name] = _topic_failure(name, code)
                continue
            self.topics[name] = {int(p[1]): int(p[2]) for p in partitions}
        for name in topics - self.topics.keys() - failures.keys():
            failures[name] = Failure(f"kafka metadata has no topic '{name}'", query=True)
        return failures


class Coordinators:
    """Each consumer group's coordinator node."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns
        self.nodes: dict[str, int] = {}

    def forget(self, group: str) -> None:
        """The group's coordinator may have moved: look it up again next time."""
        self.nodes.pop(group, None)

    async def ensure(self, groups: set[str]) -> dict[str, Failure]:
        unknown = sorted(g for g in groups if g not in self.nodes)
        if not unknown:
            return {}
        conns = self._conns
        conn = await conns.any()
        found: list[tuple[str, int, str, int, int]] = []  # group, node, host, port, error
        if supports(conn, API_FIND_COORDINATOR, 4):
            response = await conns.send(conn, FindCoordinators(unknown), "FindCoordinator")
            found = [(c[0], c[1], c[2], c[3], c[4]) for c in response.coordinators]
        else:
            responses = await asyncio.gather(
                *(
                    conns.send(conn, FindCoordinatorRequest(g, 0), "FindCoordinator")
                    for g in unknown
                )
            )
            found = [
                (g, r.coordinator_id, r.host, r.port, r.error_code)
                for g, r in zip(unknown, responses, strict=True)
            ]
        failures: dict[str, Failure] = {}
        for group, node_id, host, port, code in found:
            if code:
                failures[group] = Failure(
                    f"no coordinator for consumer group '{group}': {broker_error(code)}",
                    query=code not in COORDINATOR_GONE,
                )
                continue
            self.nodes[group] = int(node_id)
            if conns.brokers.get(int(node_id)) != (host, int(port)):
                conns.brokers[int(node_id)] = (str(host), int(port))
        for group in unknown:
            if group not in self.nodes and group not in failures:
                failures[group] = Failure(f"no coordinator returned for group '{group}'")
        return failures


def _topic_failure(topic: str, code: int) -> Failure:
    if code == 3:
        return Failure(f"topic '{topic}' does not exist", query=True)
    transient = kafka_errors.for_code(code).retriable
    return Failure(
        f"kafka metadata for topic '{topic}': {broker_error(code)}",
        query=not transient,
        retriable=transient,
    )
