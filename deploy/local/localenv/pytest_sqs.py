"""Pytest fixtures for the SQS-compatible server (ElasticMQ): a shared session instance.

`elasticmq_server` starts on first use (a JVM: a few seconds) and stops at the end of the run,
its temp dir removed; tests must not stop it (one that takes a server down starts a private one
with `elasticmq_factory()`). `sqs_queue` gives each test a fresh, empty queue.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localenv.elasticmq import ElasticMqServer

__all__ = ["SqsQueue", "elasticmq_factory", "elasticmq_server", "sqs_queue"]

_private = itertools.count(1)


@dataclass(frozen=True)
class SqsQueue:
    """A queue on the shared server: its name, URL and a boto3 client of the server."""

    name: str
    url: str
    client: Any


@pytest.fixture(scope="session")
def elasticmq_server(run_dir: Path) -> Iterator[ElasticMqServer]:
    server = ElasticMqServer(run_dir).start()
    yield server
    server.remove()


@pytest.fixture
def elasticmq_factory(run_dir: Path) -> Iterator[Callable[[], ElasticMqServer]]:
    """`make()` starts a private server; every one made is removed at the end of the test."""
    started: list[ElasticMqServer] = []

    def make() -> ElasticMqServer:
        server = ElasticMqServer(run_dir, name=f"elasticmq-private-{next(_private)}")
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.remove()


@pytest.fixture
def sqs_queue(elasticmq_server: ElasticMqServer) -> Iterator[SqsQueue]:
    client = elasticmq_server.client()
    name = f"tidal-{uuid.uuid4().hex[:10]}"
    url = client.create_queue(QueueName=name)["QueueUrl"]
    yield SqsQueue(name, url, client)
    client.delete_queue(QueueUrl=url)
