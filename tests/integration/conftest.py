"""Fixtures shared by the integration tests (components come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from localenv.kafka import KafkaBroker
from scaler.clients import ClientPool


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    """A ClientPool as the daemon has one, closed at the end of the test."""
    clients = ClientPool()
    yield clients
    await clients.aclose()


@pytest.fixture(
    params=[
        pytest.param("kafka_broker", id="kafka-3.9.1"),
        pytest.param("kafka4_broker", id="kafka-4.1.1"),
    ]
)
def any_kafka(request: pytest.FixtureRequest) -> KafkaBroker:
    """The session's Kafka 3.9 and 4.1 brokers, one per parametrized run."""
    broker: KafkaBroker = request.getfixturevalue(request.param)
    return broker
