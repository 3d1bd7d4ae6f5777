"""The prometheus scaler against a real Prometheus scraping a prometheus_client exporter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from localenv.process import free_port
from localenv.prometheus import PrometheusServer
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.prometheus import PrometheusScaler

READY_WITHIN = 60.0  # seconds for the first scrape to land (a wait, not an assertion)


@dataclass
class Exporter:
    target: str
    queue: Gauge
    multi: Gauge


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    queue = Gauge("tidal_test_queue_depth", "queue depth", registry=registry)
    multi = Gauge("tidal_test_multi", "two series", ["shard"], registry=registry)
    queue.set(7)
    multi.labels("a").set(1)
    multi.labels("b").set(2)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield Exporter(f"127.0.0.1:{port}", queue, multi)
    server.shutdown()
    server.server_close()
    thread.join(5)


async def _wait_for_series(url: str, query: str) -> None:
    """Wait until Prometheus has scraped `query`'s series at least once."""
    deadline = time.monotonic() + READY_WITHIN
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as resp:
                body = await resp.json()
            if body["data"]["result"]:
                return
            await asyncio.sleep(0.25)
    raise AssertionError(f"Prometheus at {url} never scraped {query}")


@pytest.fixture
async def prometheus(prometheus_server: PrometheusServer, exporter: Exporter) -> PrometheusServer:
    prometheus_server.set_targets([exporter.target])
    await _wait_for_series(prometheus_server.url, "tidal_test_queue_depth")
    await _wait_for_series(prometheus_server.url, "tidal_test_multi")
    return prometheus_server


def _scaler(pool: ClientPool, url: str, query: str, **meta: str) -> PrometheusScaler:
    metadata = {"serverAddress": url, "query": query, "threshold": "5", **meta}
    scaler = build_scaler(TriggerContext("ns", "so", 0, "prometheus", "", metadata), pool)
    assert isinstance(scaler, PrometheusScaler)
    return scaler


@pytest.mark.parametrize(
    ("query", "activation", "value", "active"),
    [
        pytest.param("tidal_test_queue_depth", "5", 7.0, True, id="above-activation"),
        pytest.param("tidal_test_queue_depth", "7", 7.0, False, id="equal-is-not-active"),
        pytest.param("sum(tidal_test_multi)", "0", 3.0, True, id="aggregated-vector"),
        pytest.param("scalar(sum(tidal_test_multi))", "0", 3.0, True, id="scalar"),
        pytest.param("vector(0)", "0", 0.0, False, id="zero"),
    ],
)
async def test_value_and_activation(
    prometheus: PrometheusServer,
    pool: ClientPool,
    query: str,
    activation: str,
    value: float,
    active: bool,
) -> None:
    scaler = _scaler(pool, prometheus.url, query, activationThreshold=activation)
    sample = await scaler.sample(time.time())
    assert (sample.value, sample.active) == (value, active)
    await scaler.aclose()


async def test_empty_result_is_zero_when_ignoring_null_values(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "tidal_no_such_series_xyz")
    sample = await scaler.sample(time.time())
    assert (sample.value, sample.active) == (0.0, False)
    await scaler.aclose()


async def test_empty_result_is_an_error_when_not_ignoring_null_values(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "tidal_no_such_series_xyz", ignoreNullValues="false")
    with pytest.raises(QueryError, match="target may be lost, the result is empty"):
        await scaler.sample(time.time())
    await scaler.aclose()


async def test_nan_follows_ignore_null_values(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    ignoring = _scaler(pool, prometheus.url, "vector(0) / vector(0)")
    assert (await ignoring.sample(time.time())).value == 0.0
    strict = _scaler(pool, prometheus.url, "vector(0) / vector(0)", ignoreNullValues="false")
    with pytest.raises(QueryError, match="the value is NaN"):
        await strict.sample(time.time())
    for scaler in (ignoring, strict):
        await scaler.aclose()


async def test_more_than_one_element_is_a_query_error(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "tidal_test_multi")
    with pytest.raises(QueryError, match="returned multiple elements \\(2\\)"):
        await scaler.sample(time.time())
    await scaler.aclose()


async def test_range_vector_is_a_query_error(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "tidal_test_queue_depth[1m]")
    with pytest.raises(QueryError, match="returned a matrix"):
        await scaler.sample(time.time())
    await scaler.aclose()


async def test_bad_query_is_a_non_2xx_query_error(
    prometheus: PrometheusServer, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "sum(")
    with pytest.raises(QueryError, match="HTTP 400"):
        await scaler.sample(time.time())
    await scaler.aclose()


async def test_query_time_is_the_injected_now(
    prometheus: PrometheusServer, exporter: Exporter, pool: ClientPool
) -> None:
    """`now` far in the past has no samples: the scaler asks about `now`, not the clock."""
    scaler = _scaler(pool, prometheus.url, "tidal_test_queue_depth", ignoreNullValues="false")
    assert (await scaler.sample(time.time())).value == 7.0
    with pytest.raises(QueryError, match="the result is empty"):
        await scaler.sample(time.time() - 30 * 86400)
    await scaler.aclose()


async def test_value_follows_the_exporter(
    prometheus: PrometheusServer, exporter: Exporter, pool: ClientPool
) -> None:
    scaler = _scaler(pool, prometheus.url, "tidal_test_queue_depth")
    exporter.queue.set(42)
    try:
        deadline = time.monotonic() + READY_WITHIN
        value = (await scaler.sample(time.time())).value
        while value != 42.0 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            value = (await scaler.sample(time.time())).value
        assert value == 42.0
    finally:
        exporter.queue.set(7)
        await scaler.aclose()
    await _wait_for_value(prometheus.url, "tidal_test_queue_depth", "7")


async def _wait_for_value(url: str, query: str, value: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as resp:
                body = await resp.json()
            result = body["data"]["result"]
            if result and result[0]["value"][1] == value:
                return
            await asyncio.sleep(0.25)


async def test_server_stopped_is_a_scaler_error(
    prometheus_factory: Callable[..., PrometheusServer], exporter: Exporter, pool: ClientPool
) -> None:
    server = prometheus_factory([exporter.target])
    scaler = _scaler(pool, server.url, "vector(1)")
    assert (await scaler.sample(time.time())).value == 1.0
    server.stop()
    with pytest.raises(ScalerError) as info:
        await scaler.sample(time.time())
    assert not isinstance(info.value, QueryError)
    await scaler.aclose()
