"""Pytest fixtures for the brokers: shared session instances and private per-test factories.

Session fixtures (`redis_server`, `nats_server`, `kafka_broker`, `kafka4_broker`, `minio_server`,
`prometheus_server`) start on first use and stop at the end of the run; tests must not stop
them. A test that takes a component down uses a factory (`redis_factory(**kwargs)`,
`nats_factory()`, `kafka_factory(version)`, `prometheus_factory(targets)`): each call starts a
private instance that is stopped when the test ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from localenv.kafka import KafkaBroker
from localenv.minio import MinioServer
from localenv.nats import NatsServer
from localenv.paths import KAFKA_VERSIONS
from localenv.prometheus import PrometheusServer, ScrapedPod
from localenv.pytest_common import run_dir
from localenv.redis import RedisServer

__all__ = [
    "kafka4_broker",
    "kafka_broker",
    "kafka_factory",
    "minio_server",
    "nats_factory",
    "nats_server",
    "prometheus_factory",
    "prometheus_server",
    "redis_factory",
    "redis_server",
    "run_dir",
]

_private = itertools.count(1)


def _name(kind: str) -> str:
    """A unique name for a private instance, so its log and data get their own paths."""
    return f"{kind}-private-{next(_private)}"


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[RedisServer]:
    """Shared Redis (no password, keyspace notifications on: push-source tests need them)."""
    server = RedisServer(run_dir, notify_keyspace_events="KEA").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(run_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(run_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_broker(run_dir: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(run_dir, KAFKA_VERSIONS[0]).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka4_broker(run_dir: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(run_dir, KAFKA_VERSIONS[1]).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def minio_server(
    run_dir: Path, redis_server: RedisServer, nats_server: NatsServer
) -> Iterator[MinioServer]:
    """Shared MinIO publishing bucket events to the session Redis list and NATS subject."""
    server = MinioServer(run_dir, redis=redis_server, nats=nats_server).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_server(run_dir: Path) -> Iterator[PrometheusServer]:
    """Shared Prometheus with no targets; a test calls set_targets() for what it scrapes."""
    server = PrometheusServer(run_dir).start()
    yield server
    server.stop()


class _Started:
    """Components started by one test, stopped (last first) when it ends."""

    def __init__(self) -> None:
        self.items: list[RedisServer | NatsServer | KafkaBroker | PrometheusServer] = []

    def stop_all(self) -> None:
        while self.items:
            self.items.pop().stop()


@pytest.fixture
def redis_factory(run_dir: Path) -> Iterator[Callable[..., RedisServer]]:
    """`redis_factory(password=..., notify_keyspace_events=...)` starts a private Redis."""
    started = _Started()

    def make(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("name", _name("redis"))
        server = RedisServer(run_dir, **kwargs)
        started.items.append(server)
        return server.start()

    yield make
    started.stop_all()


@pytest.fixture
def nats_factory(run_dir: Path) -> Iterator[Callable[[], NatsServer]]:
    """`nats_factory()` starts a private NATS server with JetStream."""
    started = _Started()

    def make() -> NatsServer:
        server = NatsServer(run_dir, name=_name("nats"))
        started.items.append(server)
        return server.start()

    yield make
    started.stop_all()


@pytest.fixture
def kafka_factory(run_dir: Path) -> Iterator[Callable[..., KafkaBroker]]:
    """`kafka_factory(version="3.9.1")` starts a private single-node broker."""
    started = _Started()

    def make(version: str = KAFKA_VERSIONS[0]) -> KafkaBroker:
        broker = KafkaBroker(run_dir, version, name=_name(f"kafka-{version}"))
        started.items.append(broker)
        return broker.start()

    yield make
    started.stop_all()


@pytest.fixture
def prometheus_factory(run_dir: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """`prometheus_factory(targets)` starts a private Prometheus scraping `targets`;
    `prometheus_factory(pods=[ScrapedPod(...)])` scrapes them as a cluster's pod scrape would."""
    started = _Started()

    def make(
        targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        *,
        pods: Sequence[ScrapedPod] = (),
    ) -> PrometheusServer:
        server = PrometheusServer(
            run_dir, targets, scrape_interval, pods=pods, name=_name("prometheus")
        )
        started.items.append(server)
        return server.start()

    yield make
    started.stop_all()
