"""The metrics-api scaler against a real aiohttp server on 127.0.0.1 started by the test."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler

DOC = {
    "components": {"worker": {"tasks": 12, "ratio": 0.25, "mem": "10Mi", "name": "w"}},
    "items": [{"value": 3}, {"value": "1.5"}],
    "flag": True,
}
TOKEN = "bearer-token-xyz"
API_KEY = "api-key-abc"
BASIC = base64.b64encode(b"user:pass-word").decode()


class Api:
    """The HTTP API under test, recording what each request carried."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_get("/stats", self.stats)
        self.app.router.add_get("/secure/{mode}", self.secure)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/redirect", self.redirect)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/text", self.text)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request) -> None:
        self.seen.append({"headers": dict(request.headers), "query": dict(request.query)})

    async def stats(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(DOC)

    async def secure(self, request: web.Request) -> web.Response:
        self._record(request)
        mode = request.match_info["mode"]
        ok = {
            "bearer": request.headers.get("Authorization") == f"Bearer {TOKEN}",
            "basic": request.headers.get("Authorization") == f"Basic {BASIC}",
            "header": request.headers.get("X-API-KEY") == API_KEY,
            "query": request.query.get("api_key") == API_KEY,
        }[mode]
        return web.json_response(DOC) if ok else web.json_response({"error": "no"}, status=401)

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="upstream broke")

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/stats")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(DOC)

    async def text(self, request: web.Request) -> web.Response:
        return web.Response(text="not json")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Api()
    await server.start()
    yield server
    await server.stop()


def _scaler(
    pool: ClientPool, url: str, location: str, auth: dict[str, str] | None = None, **meta: str
) -> Any:
    metadata = {"url": url, "valueLocation": location, "targetValue": "5", **meta}
    trigger = TriggerContext("ns", "so", 0, "metrics-api", "", metadata, auth_params=auth or {})
    return build_scaler(trigger, pool)


@pytest.mark.parametrize(
    ("location", "value"),
    [
        pytest.param("components.worker.tasks", 12.0, id="nested-int"),
        pytest.param("components.worker.ratio", 0.25, id="float"),
        pytest.param("components.worker.mem", 10 * 2**20, id="quantity-string"),
        pytest.param("items.0.value", 3.0, id="array-index"),
        pytest.param("items.1.value", 1.5, id="numeric-string"),
        pytest.param("items.#", 2.0, id="array-length"),
    ],
)
async def test_value_paths(api: Api, pool: ClientPool, location: str, value: float) -> None:
    scaler = _scaler(pool, f"{api.url}/stats", location, activationTargetValue="2")
    sample = await scaler.sample(50.0)
    assert sample.value == value
    assert sample.active is (value > 2)
    assert sample.observed_at == 50.0
    await scaler.aclose()


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        pytest.param("components.nope", "valueLocation 'components.nope' not found", id="missing"),
        pytest.param("items.7.value", "not found (no '7')", id="index-out-of-range"),
        pytest.param("components.worker.name", "got: 'w'", id="non-numeric-string"),
        pytest.param("flag", "got: 'bool'", id="bool"),
        pytest.param("components", "got: 'dict'", id="object"),
    ],
)
async def test_unusable_values_are_query_errors(
    api: Api, pool: ClientPool, location: str, fragment: str
) -> None:
    scaler = _scaler(pool, f"{api.url}/stats", location)
    with pytest.raises(QueryError, match=re.escape(fragment)):
        await scaler.sample(0.0)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("path", "meta", "auth"),
    [
        pytest.param("bearer", {"authMode": "bearer"}, {"token": TOKEN}, id="bearer"),
        pytest.param(
            "basic",
            {"authMode": "basic"},
            {"username": "user", "password": "pass-word"},
            id="basic",
        ),
        pytest.param("header", {"authMode": "apiKey"}, {"apiKey": API_KEY}, id="api-key-header"),
        pytest.param(
            "query",
            {"authMode": "apiKey", "method": "query"},
            {"apiKey": API_KEY},
            id="api-key-query",
        ),
    ],
)
async def test_auth_modes(
    api: Api, pool: ClientPool, path: str, meta: dict[str, str], auth: dict[str, str]
) -> None:
    scaler = _scaler(pool, f"{api.url}/secure/{path}", "components.worker.tasks", auth, **meta)
    assert (await scaler.sample(0.0)).value == 12.0
    await scaler.aclose()
    unauthenticated = _scaler(pool, f"{api.url}/secure/{path}", "components.worker.tasks")
    with pytest.raises(QueryError, match="HTTP 401"):
        await unauthenticated.sample(0.0)
    await unauthenticated.aclose()


async def test_wrong_credentials_never_appear_in_errors(api: Api, pool: ClientPool) -> None:
    scaler = _scaler(
        pool,
        f"{api.url}/secure/query",
        "components.worker.tasks",
        {"apiKey": "wrong-key-987"},
        authMode="apiKey",
        method="query",
    )
    with pytest.raises(QueryError) as info:
        await scaler.sample(0.0)
    assert "wrong-key-987" not in str(info.value)
    await scaler.aclose()


@pytest.mark.parametrize("code", [pytest.param(c, id=str(c)) for c in (404, 500, 503)])
async def test_non_2xx_is_a_query_error(api: Api, pool: ClientPool, code: int) -> None:
    scaler = _scaler(pool, f"{api.url}/status/{code}", "x")
    with pytest.raises(QueryError, match=f"HTTP {code}: upstream broke"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_redirects_are_not_followed(api: Api, pool: ClientPool) -> None:
    scaler = _scaler(
        pool, f"{api.url}/redirect", "components.worker.tasks", {"token": TOKEN}, authMode="bearer"
    )
    with pytest.raises(QueryError, match="HTTP 302 \\(redirects are not followed\\)"):
        await scaler.sample(0.0)
    assert api.seen == []  # /stats never received the credentials
    await scaler.aclose()


async def test_not_json_is_a_query_error(api: Api, pool: ClientPool) -> None:
    scaler = _scaler(pool, f"{api.url}/text", "x")
    with pytest.raises(QueryError, match="not JSON"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_timeout_is_a_scaler_error(api: Api, pool: ClientPool) -> None:
    scaler = _scaler(pool, f"{api.url}/slow", "components.worker.tasks", timeout="200")
    with pytest.raises(ScalerError, match=re.escape("timed out after 0.2 s")) as info:
        await scaler.sample(0.0)
    assert not isinstance(info.value, QueryError)
    await scaler.aclose()


async def test_server_gone_is_a_scaler_error(api: Api, pool: ClientPool) -> None:
    scaler = _scaler(pool, f"{api.url}/stats", "components.worker.tasks")
    assert (await scaler.sample(0.0)).value == 12.0
    await api.stop()
    with pytest.raises(ScalerError) as info:
        await scaler.sample(1.0)
    assert not isinstance(info.value, QueryError)
    await scaler.aclose()


async def test_scalers_share_one_session_per_endpoint_and_credentials(
    api: Api, pool: ClientPool
) -> None:
    a = _scaler(pool, f"{api.url}/stats", "components.worker.tasks")
    b = _scaler(pool, f"{api.url}/stats", "items.0.value")
    c = _scaler(
        pool, f"{api.url}/secure/bearer", "items.0.value", {"token": TOKEN}, authMode="bearer"
    )
    await asyncio.gather(a.sample(0.0), b.sample(0.0), c.sample(0.0))
    assert len(pool) == 2
    for scaler in (a, b, c):
        await scaler.aclose()
    assert len(pool) == 0
