"""What the Redis list and stream scalers share: connection parameters and clients (their
one-trip reads are scalers.redis_reads).

Connection parameters follow KEDA's redis scalers: ``address``/``addresses`` or
``host(s)`` + ``port(s)`` (metadata, ``...FromEnv`` or auth params), ``username``/``password``,
sentinel credentials and master, ``databaseIndex``, TLS through ``enableTLS`` (metadata) or
``tls: enable`` (auth params) with ``ca``/``cert``/``key``/``keyPassword`` and ``unsafeSsl``.

Clients are shared through the ClientPool per (mode, addresses, db, user, password hash, TLS).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedSSLConnection
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from scaler.clients import ClientKey, TlsSettings, fingerprint
from scaler.contract import TriggerContext
from scaler.errors import ScalerError
from scaler.params import Config, Param

Mode = Literal["single", "cluster", "sentinel"]

CONNECTION_PARAMS: tuple[Param, ...] = (
    Param("address", "list", aliases=("addresses",), doc="host:port (comma list for cluster)"),
    Param("host", "list", aliases=("hosts",), doc="alternative to address, with port"),
    Param("port", "list", aliases=("ports",)),
    Param("username"),
    Param("password", secret=True),
    Param("sentinelUsername"),
    Param("sentinelPassword", secret=True),
    Param("sentinelMaster"),
    Param("databaseIndex", "int", sources=("metadata",), default=0, minimum=0),
    Param("enableTLS", "bool", sources=("metadata",), default=False),
    Param("unsafeSsl", "bool", sources=("metadata",), default=False),
    Param("tls", sources=("auth",), allowed=("enable", "disable")),
    Param("ca", sources=("auth",), secret=True),
    Param("cert", sources=("auth",), secret=True),
    Param("key", sources=("auth",), secret=True),
    Param("keyPassword", sources=("auth",), secret=True),
)


def mode_of(trigger_type: str) -> Mode:
    if trigger_type.startswith("redis-cluster"):
        return "cluster"
    if trigger_type.startswith("redis-sentinel"):
        return "sentinel"
    return "single"


def _addresses(config: Config) -> tuple[list[tuple[str, int]], list[str]]:
    problems: list[str] = []
    out: list[tuple[str, int]] = []
    if config.get_list("address"):
        for item in config.get_list("address"):
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit():
                problems.append(
                    f"invalid address '{item}': address should be in the format of host:port"
                )
            else:
                out.append((host.strip("[]"), int(port)))
        return out, problems
    hosts, ports = config.get_list("host"), config.get_list("port")
    if not hosts:
        problems.append(
            "no address or host given. address should be in the format of host:port"
            " or you should set the host/port values"
        )
    elif len(hosts) != len(ports):
        problems.append(
            "not enough hosts or ports given. number of hosts should be equal to"
            " the number of ports"
        )
    else:
        for host, port in zip(hosts, ports, strict=True):
            if not port.isdigit():
                problems.append(f"invalid port '{port}' for host '{host}'")
            else:
                out.append((host, int(port)))
    return out, problems


def validate_connection(config: Config, trigger_type: str) -> list[str]:
    """Cross-field checks of the connection parameters (KEDA's wording where it has one)."""
    addresses, problems = _addresses(config)
    mode = mode_of(trigger_type)
    if mode == "single" and len(addresses) > 1:
        problems.append(f"trigger type '{trigger_type}' takes one address, got {len(addresses)}")
    if mode == "sentinel" and not config.opt_str("sentinelMaster"):
        problems.append("missing required parameter 'sentinelMaster' for a sentinel trigger")
    if config.has("enableTLS") and config.opt_str("tls") is not None:
        problems.append(
            "unable to set `tls` in both ScaledObject and TriggerAuthentication together"
        )
    cert_and_key = (config.opt_str("cert") is None) == (config.opt_str("key") is None)
    if not cert_and_key:
        problems.append("both cert and key must be provided for TLS client authentication")
    if mode == "cluster" and config.get_int("databaseIndex") != 0:
        problems.append("databaseIndex is not supported by Redis Cluster (only database 0)")
    if _tls_enabled(config) and cert_and_key:
        try:
            TlsSettings.from_config(config).check()
        except ValueError as exc:
            problems.append(f"invalid TLS settings: {exc}")
    return problems


def _tls_enabled(config: Config) -> bool:
    return config.get_bool("enableTLS") or config.opt_str("tls") == "enable"


@dataclass(frozen=True, slots=True, repr=False)
class RedisTarget:
    """How to reach one Redis deployment; repr shows no credentials."""

    mode: Mode
    addresses: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None
    sentinel_master: str | None
    tls: TlsSettings | None  # the context itself comes from the shared cache in create_client
    timeout: float

    @classmethod
    def from_config(cls, config: Config, trigger: TriggerContext) -> RedisTarget:
        addresses, _ = _addresses(config)
        return cls(
            mode=mode_of(trigger.type),
            addresses=tuple(addresses),
            db=config.get_int("databaseIndex"),
            username=config.opt_str("username"),
            password=config.opt_str("password"),
            sentinel_username=config.opt_str("sentinelUsername"),
            sentinel_password=config.opt_str("sentinelPassword"),
            sentinel_master=config.opt_str("sentinelMaster"),
            tls=TlsSettings.from_config(config) if _tls_enabled(config) else None,
            timeout=trigger.timeout,
        )

    @property
    def endpoint(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.addresses)
        master = f"/{self.sentinel_master}" if self.mode == "sentinel" else ""
        return f"{self.mode}://{hosts}{master}/{self.db}"

    def __repr__(self) -> str:
        return f"RedisTarget({self.endpoint}, tls={self.tls is not None})"

    def key(self) -> ClientKey:
        return ClientKey(
            "redis",
            self.endpoint,
            fingerprint(
                self.username,
                self.password,
                self.sentinel_username,
                self.sentinel_password,
                "" if self.tls is None else self.tls.fingerprint,
            ),
        )

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.sentinel_password) if s)


class _PemSSLConnection(SSLConnection):
    """redis-py's SSL connection using a context built from PEM text (not files)."""

    def __init__(self, *, tidal_ssl: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context.context = tidal_ssl


class _PemSentinelSSLConnection(SentinelManagedSSLConnection):
    """The same for a master found through Sentinel."""

    def __init__(self, *, tidal_ssl: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.ssl_context.context = tidal_ssl


@functools.cache
def driver_info() -> DriverInfo:
    """redis-py's CLIENT SETINFO metadata, made once. Without it redis-py reads its own package
    metadata (importlib.metadata: ~0.7 ms, ~6 ms under load) for every client AND every
    connection object it makes -- on the event loop, ~30 times a second with 1000 failing
    objects rebuilt every 30 s (benchmarks/tls_lateness.py's profile)."""
    return DriverInfo()


def _client_kwargs(target: RedisTarget) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password,
        "socket_timeout": target.timeout,
        "socket_connect_timeout": target.timeout,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": True,
        "driver_info": driver_info(),
    }


async def create_client(target: RedisTarget) -> Any:
    """A redis-py asyncio client for `target` (no I/O happens until the first command, but a
    TLS context missing from the shared cache is built first, in a worker thread)."""
    kwargs = _client_kwargs(target)
    tls: ssl.SSLContext | None = None
    if target.tls is not None:
        try:
            tls = await target.tls.context()
        except ValueError as exc:
            raise ScalerError(f"redis {target.endpoint}: invalid TLS settings: {exc}") from None
    if target.mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.addresses],
            ssl=tls is not None,
            **kwargs,
        )
        if tls is not None:
            manager = cluster.nodes_manager
            manager.connection_kwargs["connection_class"] = _PemSSLConnection
            manager.connection_kwargs["tidal_ssl"] = tls
            for node in manager.startup_nodes.values():
                node.connection_class = _PemSSLConnection
                node.connection_kwargs["tidal_ssl"] = tls
        return cluster
    tls_kwargs: dict[str, Any] = {}
    if tls is not None:
        tls_kwargs = {"connection_class": _PemSSLConnection, "tidal_ssl": tls}
    if target.mode == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "socket_timeout": target.timeout,
            "socket_connect_timeout": target.timeout,
            "driver_info": driver_info(),
            **tls_kwargs,
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.addresses), sentinel_kwargs=sentinel_kwargs, db=target.db, **kwargs
        )
        assert target.sentinel_master is not None
        if tls is not None:
            tls_kwargs["connection_class"] = _PemSentinelSSLConnection
        return sentinel.master_for(target.sentinel_master, **tls_kwargs)
    host, port = target.addresses[0]
    pool = ConnectionPool(host=host, port=port, db=target.db, **kwargs, **tls_kwargs)
    return Redis.from_pool(pool)  # closing the client closes its pool (and its connections)


async def close_client(client: Any) -> None:
    """Close a client made by `create_client` and every connection it opened. A client built
    on a pool it was handed (sentinel's master_for) leaves that pool open on aclose(): its
    connections would live on until garbage collection, one set per rebuilt scaler."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect()


def join_problems(*groups: Iterable[str]) -> list[str]:
    return [p for group in groups for p in group]
