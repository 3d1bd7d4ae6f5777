"""The two offset reads of a cluster, batched by broker.

Committed offsets: ONE OffsetFetch per group coordinator covering every group asked for
(OffsetFetch v8, KIP-709); on brokers without v8, one OffsetFetch per group. Latest (end)
offsets: ONE ListOffsets per partition leader covering every partition asked for. A broker's
failure fails only the groups or partitions it was asked about, and marks the cached metadata or
coordinator stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import aiokafka.errors as kafka_errors
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.offset import OffsetRequest

from scalers.kafka.caches import Coordinators, Metadata
from scalers.kafka.connections import Connections
from scalers.kafka.failures import Failure, RoundFailed, broker_error
from scalers.kafka.lag import PartitionKey
from scalers.kafka.protocol import (
    API_OFFSET_FETCH,
    COORDINATOR_GONE,
    GROUP_ID_NOT_FOUND,
    LATEST,
    OffsetFetchGroups,
    supports,
)

GroupSpec: TypeAlias = (
    list[tuple[str, list[int]]] | None
)  # (topic, partitions) pairs; None: every commit


class OffsetReader:
    """Committed offsets per group and latest offsets per partition, over shared connections."""

    def __init__(self, conns: Connections, metadata: Metadata, coordinators: Coordinators) -> None:
        self._conns = conns
        self._metadata = metadata
        self._coordinators = coordinators

    # -- committed offsets -----------------------------------------------------------------------

    async def committed(
        self, specs: Mapping[str, GroupSpec]
    ) -> dict[str, dict[PartitionKey, int] | Failure]:
        by_node: dict[int, dict[str, GroupSpec]] = {}
        for group, spec in specs.items():
            by_node.setdefault(self._coordinators.nodes[group], {})[group] = spec
        results = await asyncio.gather(
            *(self._committed_from(node, node_specs) for node, node_specs in by_node.items())
        )
        out: dict[str, dict[PartitionKey, int] | Failure] = {}
        for result in results:
            out.update(result)
        return out

    async def _committed_from(
        self, node_id: int, specs: Mapping[str, GroupSpec]
    ) -> dict[str, dict[PartitionKey, int] | Failure]:
        try:
            conn = await self._conns.node(node_id)
            if supports(conn, API_OFFSET_FETCH, 8):
                response = await self._conns.send(conn, OffsetFetchGroups(specs), "OffsetFetch")
                parsed = {
                    g[0]: self._group_offsets(g[0], g[2], g[1], lambda p: (p[1], p[4]))
                    for g in response.groups
                }
            else:
                responses = await asyncio.gather(
                    *(
                        self._conns.send(conn, OffsetFetchRequest(group, spec), "OffsetFetch")
                        for group, spec in specs.items()
                    )
                )
                parsed = {
                    group: self._group_offsets(
                        group, getattr(r, "error_code", 0), r.topics, lambda p: (p[1], p[3])
                    )
                    for group, r in zip(specs, responses, strict=True)
                }
        except RoundFailed as exc:
            for group in specs:
                self._coordinators.forget(group)
            return dict.fromkeys(specs, exc.failure)
        for group in specs:
            if group not in parsed:
                parsed[group] = Failure(f"the coordinator did not answer for group '{group}'")
        return parsed

    def _group_offsets(
        self,
        group: str,
        code: int,
        topics: Iterable[Any] | None,
        offset_and_error: Callable[[Any], tuple[int, int]],
    ) -> dict[PartitionKey, int] | Failure:
        if code in COORDINATOR_GONE:
            self._coordinators.forget(group)
            return Failure(f"consumer group '{group}': coordinator moved: {broker_error(code)}")
        if code == GROUP_ID_NOT_FOUND:
            return Failure(f"consumer group '{group}' does not exist", query=True)
        if code:
            return Failure(f"consumer group '{group}': {broker_error(code)}", query=True)
        offsets: dict[PartitionKey, int] = {}
        for topic in topics or ():
            name, partitions = topic[0], topic[1]
            for partition in partitions:
                offset, error = offset_and_error(partition)
                if error:
                    return Failure(
                        f"consumer group '{group}', topic '{name}' partition {partition[0]}:"
                        f" {broker_error(error)}",
                        query=error not in COORDINATOR_GONE,
                    )
                offsets[(str(name), int(partition[0]))] = int(offset)
        return offsets

    # -- latest offsets --------------------------------------------------------------------------

    async def latest(
        self, topics: set[str], only: Mapping[str, frozenset[int]] | None = None
    ) -> tuple[dict[PartitionKey, int], dict[PartitionKey, Failure]]:
        """End offsets of `topics` (of `only[topic]`'s partitions where given): one ListOffsets
        per partition leader."""
        by_leader: dict[int, dict[str, list[int]]] = {}
        failures: dict[PartitionKey, Failure] = {}
        for topic in sorted(topics):
            subset = only.get(topic) if only is not None else None
            for partition, leader in sorted(self._metadata.topics[topic].items()):
                if subset is not None and partition not in subset:
                    continue
                if leader < 0:
                    self._conns.metadata_stale = True
                    failures[(topic, partition)] = Failure(
                        f"topic '{topic}' partition {partition} has no leader", retriable=True
                    )
                    continue
                by_leader.setdefault(leader, {}).setdefault(topic, []).append(partition)
        results = await asyncio.gather(
            *(self._latest_from(leader, wanted) for leader, wanted in by_leader.items())
        )
        latest: dict[PartitionKey, int] = {}
        for found, failed in results:
            latest.update(found)
            failures.update(failed)
        return latest, failures

    async def _latest_from(
        self, leader: int, wanted: Mapping[str, list[int]]
    ) -> tuple[dict[PartitionKey, int], dict[PartitionKey, Failure]]:
        keys = [(t, p) for t, parts in wanted.items() for p in parts]
        request = OffsetRequest(
            -1, 0, [(t, [(p, LATEST) for p in parts]) for t, parts in wanted.items()]
        )
        try:
            conn = await self._conns.node(leader)
            response = await self._conns.send(conn, request, "ListOffsets")
        except RoundFailed as exc:
            return {}, dict.fromkeys(keys, exc.failure)
        latest: dict[PartitionKey, int] = {}
        failures: dict[PartitionKey, Failure] = {}
        legacy = response.API_VERSION == 0
        for topic, partitions in response.topics:
            for entry in partitions:
                partition, code = int(entry[0]), int(entry[1])
                key = (str(topic), partition)
                if code:
                    self._conns.metadata_stale = True
                    failures[key] = Failure(
                        f"latest offset of topic '{topic}' partition {partition}:"
                        f" {broker_error(code)}",
                        query=code == 3,
                        retriable=code != 3 and kafka_errors.for_code(code).retriable,
                    )
                elif legacy:
                    latest[key] = int(entry[2][0]) if entry[2] else 0
                else:
                    latest[key] = int(entry[3])
        return latest, failures
