"""The fault proxy itself (deploy/local/localenv/faultproxy.py), against a loopback echo server."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from localenv.certs import new_ca
from localenv.faultbrokers import tls_server_context
from localenv.faultproxy import FaultProxy

HOST = "127.0.0.1"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    p = await asyncio.to_thread(FaultProxy((HOST, port), name="proxy-echo").start)
    yield p
    await asyncio.to_thread(p.stop)
    server.close()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"ping")
    async with asyncio.timeout(10):
        return await reader.read(100)


async def test_every_mode(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    assert await _roundtrip(reader, writer) == b"ping"

    await asyncio.to_thread(proxy.delay, 0.5)
    t0 = time.monotonic()
    assert await _roundtrip(reader, writer) == b"ping"  # an open connection slows down too
    assert time.monotonic() - t0 >= 0.5
    writer.write(b"held")
    held = asyncio.ensure_future(reader.read(100))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(proxy.pass_through)  # releases what it holds at once
    assert await held == b"held"

    await asyncio.to_thread(proxy.blackhole)
    assert await reader.read(100) == b""  # open connections dropped
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(b"ping")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await reader.read(100)
    writer.close()

    await asyncio.to_thread(proxy.refuse)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, proxy.port)

    trusted, other = new_ca("proxy-test-trusted"), new_ca("proxy-test-other")
    await asyncio.to_thread(proxy.terminate_tls, tls_server_context(trusted))
    client = ssl.create_default_context(cadata=trusted.cert_pem.decode())
    reader, writer = await asyncio.open_connection(HOST, proxy.port, ssl=client)
    assert await _roundtrip(reader, writer) == b"ping"
    writer.close()
    untrusting = ssl.create_default_context(cadata=other.cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(HOST, proxy.port, ssl=untrusting)

    await asyncio.to_thread(lambda: proxy.set_mode("pass", drop=True))
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    assert await _roundtrip(reader, writer) == b"ping"
    writer.close()


def test_upstream_must_be_loopback() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        FaultProxy(("192.0.2.1", 80))


async def test_record_keeps_what_clients_sent_in_order() -> None:
    server = await asyncio.start_server(_echo, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    recording = await asyncio.to_thread(FaultProxy((HOST, port), record=True).start)
    try:
        reader, writer = await asyncio.open_connection(HOST, recording.port)
        for word in (b"one ", b"two"):
            writer.write(word)
            await writer.drain()
            async with asyncio.timeout(10):
                assert await reader.read(100) == word  # echoed, so forwarded
        writer.close()
        await writer.wait_closed()
        assert recording.sent() == b"one two"
    finally:
        await asyncio.to_thread(recording.stop)
        server.close()
        await server.wait_closed()
