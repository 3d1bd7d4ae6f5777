"""Interceptors and the daemon's `http` trigger over real sockets, without a cluster.

Real `Interceptor` servers (proxy + admin ports on 127.0.0.1) and a real backend server; the
routes and backends are handed to the interceptors' watch hooks directly instead of coming from
Kubernetes watches (those are covered by tests/e2e/test_http_*.py), so that the counts can be
checked at each step: the trigger sums every replica's in-flight requests, counts arrivals for
the request rate, wakes on each change, and the per-target hold bound answers 503 at once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localenv.certs import issue, new_ca
from localenv.process import free_port
from localenv.pytest_http import PodBackends
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.registry import default_registry
from scalers.http.proxy import ProxySettings
from scalers.http.server import Interceptor, Listen
from scalers.http.tls import TlsFiles

NS, NAME, HOST = "ns", "web", "web.example"
HSO: dict[str, Any] = {
    "metadata": {"namespace": NS, "name": NAME},
    "spec": {
        "hosts": [HOST],
        "scaleTargetRef": {"name": NAME, "service": NAME, "port": 80},
        "timeouts": {"conditionWait": "60s"},
    },
}
SERVICE = {
    "metadata": {"namespace": NS, "name": NAME},
    "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 80}]},
}


def ready_pod(port: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": "web-1", "labels": {"app": NAME}},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def _interceptor(replica: str, backend_port: int, **settings: Any) -> Interceptor:
    icpt = Interceptor(replica, ProxySettings(**settings))
    await icpt.on_route("ADDED", HSO)
    service = {
        **SERVICE,
        "spec": {
            **SERVICE["spec"],
            "ports": [{"name": "http", "port": 80, "targetPort": backend_port}],
        },
    }
    await icpt.on_service("ADDED", service)
    await icpt.start(Listen("127.0.0.1", 0), Listen("127.0.0.1", 0))
    icpt.ready.set()
    return icpt


@pytest.fixture
async def backend() -> AsyncIterator[PodBackends]:
    server = await PodBackends(["127.0.0.1"], free_port()).start()
    yield server
    await server.stop()


@pytest.fixture
async def two(backend: PodBackends) -> AsyncIterator[list[Interceptor]]:
    pair = [await _interceptor(f"r{i}", backend.port) for i in range(2)]
    yield pair
    for icpt in pair:
        await icpt.aclose()


def _trigger(interceptors: list[Interceptor], **metadata: str) -> TriggerContext:
    admins = ",".join(f"127.0.0.1:{i.admin_port}" for i in interceptors)
    return TriggerContext(
        NS, NAME, 0, "http", "", {"interceptors": admins, **metadata}, timeout=5.0
    )


async def _until(probe: Any, check: Any, timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if check(value):
                return value
            await asyncio.sleep(0.02)


async def test_the_trigger_sums_every_replica_and_wakes_on_each_change(
    two: list[Interceptor], backend: PodBackends, pool: ClientPool
) -> None:
    scaler = default_registry().build(_trigger(two), pool)
    rate = default_registry().build(
        _trigger(two, metric="requestRate", window="10s", granularity="1s"), pool
    )
    wakeups = scaler.wakeups()  # type: ignore[attr-defined]
    await anext(wakeups)  # subscribed
    now = 1_000.0
    first = await scaler.sample(now)
    assert (first.value, first.active) == (0.0, False)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def get(icpt: Interceptor, i: int) -> int:
            headers = {"Host": HOST, "X-Request-Id": f"{icpt.stats.replica}-{i}"}
            async with http.get(f"http://127.0.0.1:{icpt.proxy_port}/", headers=headers) as r:
                await r.read()
                return r.status

        held = [asyncio.create_task(get(two[0], i)) for i in range(30)]
        held += [asyncio.create_task(get(two[1], i)) for i in range(20)]
        await asyncio.wait_for(anext(wakeups), 10)  # a push, no polling
        sample = await _until(lambda: scaler.sample(now), lambda s: s.value == 50.0)
        assert sample.active
        # Both replicas see the pod turn Ready: every held request goes through.
        for icpt in two:
            await icpt.on_pod("ADDED", ready_pod(backend.port))
        assert await asyncio.gather(*held) == [200] * 50
        assert len(backend.seen) == 50
        assert max(backend.seen.values()) == 1
        await _until(lambda: scaler.sample(now), lambda s: s.value == 0.0)
        quiet = await scaler.sample(now)
        assert (quiet.value, quiet.active) == (0.0, False)  # nothing new: inactive
        # One quick request between two samples: never seen in flight, still active.
        assert await get(two[0], 99) == 200
        feed = await scaler._feed()  # type: ignore[attr-defined]
        await _until(
            lambda: asyncio.sleep(
                0, (feed.arrivals(f"{NS}/{NAME}"), feed.in_flight(f"{NS}/{NAME}"))
            ),
            lambda seen: seen == (51, 0),
        )
    blip = await scaler.sample(now)
    assert (blip.value, blip.active) == (0.0, True)
    assert (await scaler.sample(now)).active is False
    per_second = await rate.sample(time.time())
    assert per_second.value == pytest.approx(51 / 10)
    await wakeups.aclose()
    await scaler.aclose()
    await rate.aclose()


async def test_held_requests_beyond_the_bound_get_503_at_once(
    backend: PodBackends,
) -> None:
    icpt = await _interceptor("bounded", backend.port, max_held=5, retry_after=7)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{icpt.proxy_port}/"

            async def get() -> tuple[int, str | None]:
                async with http.get(url, headers={"Host": HOST}) as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After")

            held = [asyncio.create_task(get()) for _ in range(5)]
            await _until(
                lambda: asyncio.sleep(0, icpt.proxy.held.get((NS, NAME), 0)), lambda n: n == 5
            )
            assert await get() == (503, "7")
            await icpt.on_pod("ADDED", ready_pod(backend.port))
            assert [s for s, _ in await asyncio.gather(*held)] == [200] * 5
        metrics = await _metrics(icpt)
        assert 'outcome="queue_full"' in metrics
        labels = f'name="{NAME}",namespace="{NS}"'  # the exposition sorts label names
        assert f'tidal_interceptor_requests_total{{code="200",{labels}}} 5.0' in metrics
        assert f'tidal_interceptor_requests_total{{code="503",{labels}}} 1.0' in metrics
        assert f"tidal_interceptor_request_duration_seconds_count{{{labels}}} 6.0" in metrics
        assert f"tidal_interceptor_concurrency_count{{{labels}}} 6.0" in metrics
        assert "tidal_interceptor_in_flight 0.0" in metrics
    finally:
        await icpt.aclose()


async def _metrics(icpt: Interceptor) -> str:
    url = f"http://127.0.0.1:{icpt.admin_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


async def test_placeholder_config_answers_at_once_and_still_wakes_the_workload(
    backend: PodBackends, pool: ClientPool
) -> None:
    icpt = await _interceptor("placeholder", backend.port)
    placeholder = {
        "enabled": True,
        "refreshInterval": 3,
        "statusCode": 202,
        "headers": {"X-Service-Status": "warming-up"},
        "content": "{{.ServiceName}} in {{ .Namespace }} refreshes in {{.RefreshInterval}} s"
        " ({{.RequestID}})",
    }
    await icpt.on_route(
        "MODIFIED", {**HSO, "spec": {**HSO["spec"], "placeholderConfig": placeholder}}
    )
    scaler = default_registry().build(_trigger([icpt]), pool)
    try:
        wakeups = scaler.wakeups()  # type: ignore[attr-defined]
        await anext(wakeups)
        await scaler.sample(0.0)
        url = f"http://127.0.0.1:{icpt.proxy_port}/"
        async with aiohttp.ClientSession() as http:
            headers = {"Host": HOST, "X-Request-ID": "abc"}
            async with http.get(url, headers=headers) as r:
                assert r.status == 202
                assert r.headers["X-Service-Status"] == "warming-up"
                assert await r.text() == f"{NAME} in {NS} refreshes in 3 s (abc)"
            await asyncio.wait_for(anext(wakeups), 10)  # the daemon heard of it
            assert (await scaler.sample(0.0)).active
            await icpt.on_pod("ADDED", ready_pod(backend.port))
            async with http.get(url, headers=headers) as r:
                assert r.status == 200
                assert (await r.json())["id"] == "abc"  # forwarded, headers and all
        await wakeups.aclose()
        assert 'outcome="placeholder"' in await _metrics(icpt)
    finally:
        await scaler.aclose()
        await icpt.aclose()


CHUNKED_ANSWER = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: raw\r\n"
    b"Connection: keep-alive, X-Private\r\nX-Private: hop\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)


async def test_the_forward_path_keeps_connections_alive_dechunks_and_resends_on_a_closed_one(
    backend: PodBackends,
) -> None:
    """A raw HTTP/1.1 backend (exact bytes: chunk extensions, trailers, a Connection-listed
    header, and closing its kept-alive connection after two answers) checks the interceptor's
    own backend client. aiohttp's server would never send these, hence the hand-written one."""
    connections = 0
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):  # two answers per connection, then the backend closes it
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            requests.append(head)
            writer.write(CHUNKED_ANSWER)
            await writer.drain()
        writer.close()

    raw = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    icpt = await _interceptor("raw", port)
    await icpt.on_pod("ADDED", ready_pod(port))
    url = f"http://127.0.0.1:{icpt.proxy_port}/path?q=1"
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                headers = {"Host": HOST, "Connection": "keep-alive, X-Drop", "X-Drop": "x"}
                async with http.get(url, headers=headers) as r:
                    assert (r.status, await r.text()) == (200, "hello world"), i
                    assert r.headers["X-Backend"] == "raw"
                    assert "X-Private" not in r.headers  # listed in the backend's Connection
                    assert "X-Trailer" not in r.headers
    finally:
        await icpt.aclose()
        raw.close()
    assert len(requests) == 5  # each request reached the backend exactly once
    assert connections == 3  # kept alive two by two; a closed one was replaced, not reused
    first = requests[0].decode()
    assert first.startswith("GET /path?q=1 HTTP/1.1\r\n")
    assert f"Host: {HOST}\r\n" in first
    assert "X-Drop" not in first  # listed in the client's Connection: hop-by-hop
    assert "X-Forwarded-For: 127.0.0.1\r\n" in first


async def test_an_upload_of_unknown_length_is_streamed_to_the_backend(
    backend: PodBackends,
) -> None:
    icpt = await _interceptor("upload", backend.port)
    await icpt.on_pod("ADDED", ready_pod(backend.port))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 100_000

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{icpt.proxy_port}/up",
                data=body(),
                headers={"Host": HOST, "X-Request-Id": "up"},
            ) as r,
        ):
            assert r.status == 200
            assert (await r.json())["bytes"] == 4_000_000
    finally:
        await icpt.aclose()


async def test_tls_on_the_proxy_port_serves_a_renewed_certificate_without_a_restart(
    backend: PodBackends, tmp_path: Path
) -> None:
    ca = new_ca("tidal-test-proxy-ca")

    def leaf(name: str) -> tuple[Path, Path]:
        cert = issue(ca, name, dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True)
        return cert.write(tmp_path, "proxy")

    crt, key = leaf("first")
    icpt = Interceptor("tls", ProxySettings(), TlsFiles(crt, key, interval=0.05))
    await icpt.on_route("ADDED", HSO)
    await icpt.on_service(
        "ADDED",
        {
            **SERVICE,
            "spec": {**SERVICE["spec"], "ports": [{"port": 80, "targetPort": backend.port}]},
        },
    )
    await icpt.on_pod("ADDED", ready_pod(backend.port))
    await icpt.start(Listen("127.0.0.1", 0), Listen("127.0.0.1", 0))
    client_tls = ssl.create_default_context(cadata=ca.cert_pem.decode())

    async def served() -> tuple[int, str, str]:
        """(status, backend, the certificate's CN), each over a new connection."""
        _, writer = await asyncio.open_connection("127.0.0.1", icpt.proxy_port, ssl=client_tls)
        peer = writer.get_extra_info("ssl_object").getpeercert()
        writer.close()
        subject = dict(pair[0] for pair in peer["subject"])
        connector = aiohttp.TCPConnector(ssl=client_tls, force_close=True)
        url = f"https://127.0.0.1:{icpt.proxy_port}/"
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(url, headers={"Host": HOST, "X-Request-Id": "tls"}) as r,
        ):
            return r.status, (await r.json())["backend"], subject["commonName"]

    try:
        assert await served() == (200, "backend", "first")
        leaf("second")  # renewed in place, as cert-manager or a Secret volume update does
        assert await _until(served, lambda s: s[2] == "second") == (200, "backend", "second")
        assert icpt.cert is not None
        assert icpt.cert.loads == 2  # loaded once more, not per request or per check
    finally:
        await icpt.aclose()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    backend: PodBackends,
) -> None:
    """A raw client (it must wait for the interim answer before sending its body, which aiohttp's
    client never does)."""
    icpt = await _interceptor("expect", backend.port)
    await icpt.on_pod("ADDED", ready_pod(backend.port))
    reader, writer = await asyncio.open_connection("127.0.0.1", icpt.proxy_port)
    try:
        writer.write(
            f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: expect\r\n"
            "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n".encode()
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = json.loads(await reader.readexactly(length))
        assert (answer["id"], answer["bytes"]) == ("expect", 5)
        assert backend.seen["expect"] == 1
    finally:
        writer.close()
        await icpt.aclose()
