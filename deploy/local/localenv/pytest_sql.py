"""Pytest fixtures for the SQL servers: shared session instances and private per-test factories.

`postgres_server` and `mysql_server` start on first use and stop (their temp dirs removed) at
the end of the run; tests must not stop them, and each test makes its own database
(`postgres_database` / `mysql_database` give a fresh one with a login user). A test that takes a
server down, or needs TLS, starts a private one with `postgres_factory(tls=...)` /
`mysql_factory(tls=...)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from localenv.certs import ServingCerts
from localenv.mysql import MysqlServer
from localenv.postgres import PostgresServer

__all__ = [
    "SqlDatabase",
    "mysql_database",
    "mysql_factory",
    "mysql_server",
    "postgres_database",
    "postgres_factory",
    "postgres_server",
]

_private = itertools.count(1)
_databases = itertools.count(1)


@dataclass(frozen=True)
class SqlDatabase:
    """A fresh database on a server, with a user that may read it."""

    host: str
    port: int
    name: str
    user: str
    password: str


@pytest.fixture(scope="session")
def postgres_server(run_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(run_dir).start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def mysql_server(run_dir: Path) -> Iterator[MysqlServer]:
    server = MysqlServer(run_dir).start()
    yield server
    server.remove()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> SqlDatabase:
    """A new database with pg_stat_statements and a user `reader<n>` (password with a space,
    a quote and an '@', as secrets have)."""
    n = next(_databases)
    db = SqlDatabase(
        postgres_server.host, postgres_server.port, f"app{n}", f"reader{n}", "s3cr t'@x"
    )
    postgres_server.create_database(db.name)
    postgres_server.create_user(db.user, db.password, db.name)
    return db


@pytest.fixture
def mysql_database(mysql_server: MysqlServer) -> SqlDatabase:
    """A new database and a user `reader<n>`@127.0.0.1 (password with ':', '@' and '/')."""
    n = next(_databases)
    db = SqlDatabase(mysql_server.host, mysql_server.port, f"app{n}", f"reader{n}", "s3c:r@t/x")
    mysql_server.create_database(db.name)
    mysql_server.create_user(db.user, db.password, db.name)
    return db


Server = TypeVar("Server", PostgresServer, MysqlServer)


def _factory(run_dir: Path, cls: type[Server], kind: str) -> Iterator[Callable[..., Server]]:
    """`make(tls=...)` starts a private server of `cls`; every one made is removed at the end."""
    started: list[Server] = []

    def make(tls: ServingCerts | None = None) -> Server:
        server = cls(run_dir, name=f"{kind}-private-{next(_private)}", tls=tls)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.remove()


@pytest.fixture
def postgres_factory(run_dir: Path) -> Iterator[Callable[..., PostgresServer]]:
    yield from _factory(run_dir, PostgresServer, "postgres")


@pytest.fixture
def mysql_factory(run_dir: Path) -> Iterator[Callable[..., MysqlServer]]:
    yield from _factory(run_dir, MysqlServer, "mysql")
