"""Pytest fixtures for RabbitMQ: one broker per test session, a fresh vhost and user per test.

`rabbitmq_server` boots on first use (the Erlang node takes ~5-15 s, so once per session) and is
removed at the end of the run; tests must not stop it. `rabbitmq_vhost` gives each test its own
vhost (names with a space and a slash, as real ones may have) and a user allowed on it whose
password holds characters that must be escaped in a URL. A test that stops, kills or freezes a
broker starts its own with `rabbitmq_factory()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localenv.rabbitmq import RabbitMQServer

__all__ = ["RabbitVhost", "rabbitmq_factory", "rabbitmq_server", "rabbitmq_vhost"]

_vhosts = itertools.count(1)
_private = itertools.count(1)


@dataclass(frozen=True)
class RabbitVhost:
    """A vhost on a broker and a user (management tag) allowed on it."""

    server: RabbitMQServer
    name: str
    user: str
    password: str


@pytest.fixture(scope="session")
def rabbitmq_server(run_dir: Path) -> Iterator[RabbitMQServer]:
    server = RabbitMQServer(run_dir).start()
    yield server
    server.remove()


@pytest.fixture
def rabbitmq_vhost(rabbitmq_server: RabbitMQServer) -> RabbitVhost:
    n = next(_vhosts)
    vhost = RabbitVhost(rabbitmq_server, f"tenant {n}/a", f"reader{n}", "p@ss:w/rd %x")
    rabbitmq_server.add_vhost(vhost.name)
    rabbitmq_server.add_user(vhost.user, vhost.password, vhost.name)
    return vhost


@pytest.fixture
def rabbitmq_factory(run_dir: Path) -> Iterator[Callable[[], RabbitMQServer]]:
    """`make()` starts a private broker; every one made is removed at the end of the test."""
    started: list[RabbitMQServer] = []

    def make() -> RabbitMQServer:
        server = RabbitMQServer(run_dir, name=f"rabbitmq-private-{next(_private)}")
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.remove()
