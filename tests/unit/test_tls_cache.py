"""Shared client TLS contexts (scaler.clients.TlsSettings / TlsContextCache): one context per
distinct material, built off the event loop, bounded, never keyed or shown by the secret text."""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import scaler.clients as clients
from localenv.certs import CertKey, issue, new_ca
from scaler.clients import TLS_CONTEXTS, TlsContextCache, TlsSettings, ssl_context_from_config
from scaler.contract import TriggerContext
from scaler.params import parse
from scaler.registry import build_scaler
from scalers.http_common import HTTP_PARAMS, HttpAuth
from scalers.redis_common import create_client

CA = new_ca("tls-cache-test-ca")
OTHER_CA = new_ca("tls-cache-other-ca")
CA_PEM, OTHER_PEM = CA.cert_pem.decode(), OTHER_CA.cert_pem.decode()
GARBAGE = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n"
PASSWORD = "correct horse battery staple"


def _encrypted(pair: CertKey, password: str) -> str:
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    ).decode()


CLIENT = issue(CA, "tidal-client", client=True)
CLIENT_KEY_ENCRYPTED = _encrypted(CLIENT, PASSWORD)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    TLS_CONTEXTS.clear()
    yield
    TLS_CONTEXTS.clear()


async def _unreferenced() -> None:
    """Let the loop run the callbacks still holding finished builds' results, then collect."""
    await asyncio.sleep(0)
    gc.collect()


def _trigger(kind: str, metadata: dict[str, str], auth: dict[str, str]) -> TriggerContext:
    return TriggerContext("ns", "so", 0, kind, "", metadata, "AverageValue", auth, {})


# -- one context per material --------------------------------------------------------------------


async def test_same_material_gives_the_same_context_object() -> None:
    first = await TlsSettings(ca=CA_PEM).context()
    again = await TlsSettings(ca=CA_PEM).context()
    assert again is first
    assert TlsSettings(ca=CA_PEM).context_now() is first
    assert TLS_CONTEXTS.builds == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(TlsSettings(ca=OTHER_PEM), id="other-ca"),
        pytest.param(TlsSettings(ca=CA_PEM, verify=False), id="unsafe-ssl"),
        pytest.param(TlsSettings(), id="system-cas-only"),
        pytest.param(
            TlsSettings(CA_PEM, CLIENT.cert_pem.decode(), CLIENT_KEY_ENCRYPTED, PASSWORD),
            id="with-client-cert",
        ),
    ],
)
async def test_different_material_gives_a_different_context(other: TlsSettings) -> None:
    base = await TlsSettings(ca=CA_PEM).context()
    assert await other.context() is not base
    assert other.fingerprint != TlsSettings(ca=CA_PEM).fingerprint
    assert TLS_CONTEXTS.builds == 2


async def test_concurrent_requests_share_one_build_made_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = clients.ssl_context_from_pem

    def recording(**kwargs: Any) -> ssl.SSLContext:
        threads.append(threading.get_ident())
        return real(**kwargs)

    monkeypatch.setattr(clients, "ssl_context_from_pem", recording)
    settings = [TlsSettings(ca=CA_PEM) for _ in range(200)]
    contexts = await asyncio.gather(*(s.context() for s in settings))
    assert len({id(c) for c in contexts}) == 1
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()  # built in a worker thread, not on the loop


async def test_a_cancelled_waiter_leaves_the_build_to_the_others() -> None:
    settings = TlsSettings(ca=CA_PEM)
    waiter = asyncio.ensure_future(settings.context())
    await asyncio.sleep(0)  # the build has started
    waiter.cancel()
    ctx = await settings.context()
    assert TLS_CONTEXTS.cached(settings)
    assert await settings.context() is ctx
    assert TLS_CONTEXTS.builds == 1


async def test_redis_objects_sharing_a_trigger_authentication_build_one_context() -> None:
    # 1000 redis-list objects on the same TriggerAuthentication, each validated and its client
    # created twice (a rebuild of a failing object): one context, built once.
    auth = {"tls": "enable", "ca": CA_PEM}
    seen: set[int] = set()
    for rebuild in range(2):
        for i in range(1000):
            metadata = {"address": "127.0.0.1:1", "listName": f"list-{i}"}
            scaler: Any = build_scaler(_trigger("redis", metadata, auth), clients.ClientPool())
            client = await create_client(scaler.target)
            seen.add(id(client.connection_pool.connection_kwargs["tidal_ssl"]))
            await client.aclose()
        assert TLS_CONTEXTS.builds == 1, f"rebuild {rebuild}"
    assert len(seen) == 1


async def test_kafka_redis_and_http_scalers_share_the_context_of_equal_material() -> None:
    auth = {"tls": "enable", "ca": CA_PEM}
    pool = clients.ClientPool()
    redis: Any = build_scaler(_trigger("redis", {"address": "r:6379", "listName": "q"}, auth), pool)
    kafka_meta = {"bootstrapServers": "k:9092", "consumerGroup": "g", "topic": "t"}
    kafka: Any = build_scaler(_trigger("kafka", kafka_meta, auth), pool)
    http_config = parse(HTTP_PARAMS, _trigger("prometheus", {}, {"ca": CA_PEM}), None)
    http = HttpAuth.from_config(http_config, ("X-API-KEY", "api_key"))
    assert isinstance(http.ssl, TlsSettings)
    contexts = {
        id(await redis.target.tls.context()),
        id(await kafka.settings.tls.context()),
        id(await http.ssl.context()),
        id(ssl_context_from_config(http_config)),
    }
    assert len(contexts) == 1
    assert TLS_CONTEXTS.builds == 1


# -- bounded, and unused entries go ------------------------------------------------------------


async def test_the_cache_is_bounded_least_recently_used_out_first() -> None:
    cache = TlsContextCache(maxsize=3)
    materials = [TlsSettings(key_password=f"pw-{i}") for i in range(5)]
    first = id(await cache.get(materials[0]))
    for tls in materials[1:3]:
        await cache.get(tls)
    assert id(await cache.get(materials[0])) == first  # used again: now the most recent
    for tls in materials[3:]:
        await cache.get(tls)
    await _unreferenced()  # no client holds any of them
    assert len(cache) == 3
    assert [cache.cached(t) for t in materials] == [True, False, False, True, True]
    assert cache.builds == 5
    await cache.get(materials[1])
    assert cache.builds == 6  # dropped: built again


async def test_a_context_dropped_while_clients_use_it_is_handed_out_again() -> None:
    cache = TlsContextCache(maxsize=1)
    in_use = await cache.get(TlsSettings(ca=CA_PEM))  # e.g. held by a live Redis client
    await cache.get(TlsSettings(ca=OTHER_PEM))  # pushes it out of the bound
    await _unreferenced()
    assert len(cache) == 1
    assert await cache.get(TlsSettings(ca=CA_PEM)) is in_use
    assert cache.builds == 2


async def test_entries_unused_for_the_idle_period_are_dropped() -> None:
    now = [1000.0]
    cache = TlsContextCache(maxsize=10, idle=600.0, clock=lambda: now[0])
    kept, dropped = TlsSettings(ca=CA_PEM), TlsSettings(ca=OTHER_PEM)
    ctx = await cache.get(kept)
    await cache.get(dropped)
    now[0] += 400.0
    assert await cache.get(kept) is ctx
    now[0] += 400.0  # `dropped` unused for 800 s, `kept` for 400 s
    await _unreferenced()
    assert len(cache) == 1
    assert cache.cached(kept)
    assert not cache.cached(dropped)


# -- the material works, and stays secret --------------------------------------------------------


async def test_a_context_with_an_encrypted_key_and_its_password_completes_mutual_tls(
    tmp_path: Path,
) -> None:
    server_pair = issue(CA, "server", ip_addresses=["127.0.0.1"], server=True)
    crt, key = server_pair.write(tmp_path, "server")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    server_ctx.load_verify_locations(cadata=CA_PEM)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # the client must present CLIENT's certificate

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        writer.write(subject["commonName"].encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    settings = TlsSettings(CA_PEM, CLIENT.cert_pem.decode(), CLIENT_KEY_ENCRYPTED, PASSWORD)
    settings.check()
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=await settings.context()
        )
        assert await reader.readline() == b"tidal-client\n"
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            TlsSettings(CA_PEM, CLIENT.cert_pem.decode(), CLIENT_KEY_ENCRYPTED, "wrong"),
            "the client certificate or key does not load (SSLError)",
            id="wrong-key-password",
        ),
        pytest.param(
            TlsSettings(ca=GARBAGE), "the CA certificate does not load (SSLError)", id="bad-ca"
        ),
        pytest.param(
            TlsSettings(cert=CLIENT.cert_pem.decode()),
            "a client certificate needs both cert and key",
            id="cert-without-key",
        ),
    ],
)
async def test_bad_material_fails_check_and_build_alike_and_is_not_cached(
    settings: TlsSettings, message: str
) -> None:
    exact = f"^{re.escape(message)}$"
    with pytest.raises(ValueError, match=exact):
        settings.check()
    with pytest.raises(ValueError, match=exact):
        await settings.context()
    assert not TLS_CONTEXTS.cached(settings)
    with pytest.raises(ValueError, match=exact):  # tried again, not a remembered failure
        await settings.context()
    assert TLS_CONTEXTS.builds == 0


def test_check_does_not_build_or_cache_a_context() -> None:
    settings = TlsSettings(CA_PEM, CLIENT.cert_pem.decode(), CLIENT_KEY_ENCRYPTED, PASSWORD)
    settings.check()
    assert TLS_CONTEXTS.builds == 0
    assert not TLS_CONTEXTS.cached(settings)


def test_repr_and_fingerprint_hold_no_secret() -> None:
    settings = TlsSettings(CA_PEM, CLIENT.cert_pem.decode(), CLIENT_KEY_ENCRYPTED, PASSWORD)
    shown = repr(settings) + settings.fingerprint
    for secret in (PASSWORD, CLIENT_KEY_ENCRYPTED, "BEGIN", "horse"):
        assert secret not in shown
    assert repr(settings) == "TlsSettings(ca=True, cert=True, verify=True)"


@pytest.mark.parametrize(
    "material",
    [
        pytest.param(
            {"ca": "-----BEGIN CERTIFICATE-----\nÜber\n-----END CERTIFICATE-----\n"}, id="ca"
        ),
        pytest.param({"cert": "Zertifikat für", "key": "Schlüssel"}, id="client-pair"),
    ],
)
def test_non_ascii_pem_text_is_a_clear_error_not_a_type_error(material: dict[str, str]) -> None:
    """PEM text from a Secret can hold anything: non-ASCII made the ssl module raise TypeError,
    which escaped a scaler's validation (found by the parser fuzz)."""
    with pytest.raises(ValueError, match="does not load"):
        TlsSettings(**material).check()
