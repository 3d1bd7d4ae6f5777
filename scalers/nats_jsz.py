"""The monitoring endpoint and its ``/jsz`` answer as values: where to read, what a node said.

`MonitorTarget` names a NATS monitoring endpoint and account (and the `ClientKey` its shared
poller is leased under); `parse_jsz` reduces a ``/jsz?acc=...&consumers=true`` document to a
`JszView` -- the account's streams and each durable consumer's `ConsumerLag`. No I/O here: the
poller that fetches, coalesces and caches these answers is `scalers.nats_monitor`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scaler.clients import ClientKey
from scaler.errors import QueryError

Key = tuple[str, str]  # (stream, consumer)


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """One durable consumer's counters as its node reported them."""

    num_pending: int
    num_ack_pending: int
    leader: str = ""

    @property
    def lag(self) -> int:
        return self.num_pending + self.num_ack_pending


@dataclass(frozen=True, slots=True)
class JszView:
    """One node's ``/jsz`` answer for one account, reduced to what the scaler uses."""

    cluster_size: int
    streams: frozenset[str]
    consumers: Mapping[Key, ConsumerLag] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonitorTarget:
    """Where to read: ``<scheme>://<host>:<port>`` and the account (``$G`` by default)."""

    scheme: str
    host: str
    port: int
    account: str
    timeout: float = 3.0

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def key(self) -> ClientKey:
        return ClientKey("nats-jsz", f"{self.base}/jsz?acc={self.account}")

    def with_host(self, host: str) -> str:
        return f"{self.scheme}://{host}:{self.port}"


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


def parse_jsz(body: bytes, account: str) -> JszView:
    """Reduce a ``/jsz?acc=...&consumers=true`` answer to the account's consumers.

    Walks ``account_details[name=account].stream_detail[].consumer_detail[]`` as KEDA does.
    Raises QueryError when the answer is not such a document.
    """
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise TypeError("not an object")
        meta = doc.get("meta_cluster") or {}
        cluster_size = _count(meta.get("cluster_size")) if isinstance(meta, dict) else 0
        streams: set[str] = set()
        consumers: dict[Key, ConsumerLag] = {}
        for acc in doc.get("account_details") or ():
            if acc.get("name") != account and acc.get("id") != account:
                continue
            for stream in acc.get("stream_detail") or ():
                name = stream["name"]
                streams.add(name)
                for consumer in stream.get("consumer_detail") or ():
                    cluster = consumer.get("cluster") or {}
                    consumers[(name, consumer["name"])] = ConsumerLag(
                        _count(consumer.get("num_pending")),
                        _count(consumer.get("num_ack_pending")),
                        str(cluster.get("leader") or ""),
                    )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QueryError(f"nats-jetstream: unexpected /jsz answer ({type(exc).__name__})") from exc
    return JszView(cluster_size, frozenset(streams), MappingProxyType(consumers))
