"""What the postgresql and mysql scaler tests share: triggers, KEDA manifests resolved as the
daemon resolves them, and the guard that bounds a wait for an error that must come."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import pytest
import yaml

from localenv.certs import extension_server_certs
from localenv.pytest_sql import SqlDatabase
from scaler.auth import ObjectKind, resolve_auth_params
from scaler.clients import ClientPool
from scaler.contract import Sample, TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.sql.hub import SqlScaler

T = TypeVar("T")

# Bounds a wait for an outcome that must come (an error after the trigger's 1 s timeout); a
# hang guard, never a measured speed.
GUARD = 30.0


async def guarded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, GUARD)


def trigger(
    kind: str,
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = 3.0,
) -> TriggerContext:
    return TriggerContext(
        "ns",
        "so",
        index,
        kind,
        "",
        dict(metadata),
        auth_params=dict(auth or {}),
        resolved_env=dict(env or {}),
        timeout=timeout,
    )


def sql_scaler(pool: ClientPool, ctx: TriggerContext) -> SqlScaler:
    scaler = build_scaler(ctx, pool)
    assert isinstance(scaler, SqlScaler)
    return scaler


async def sample_all(scalers: list[SqlScaler], now: float = 0.0) -> list[Sample]:
    """One scheduler tick: every scaler samples at once."""
    return list(await asyncio.gather(*(s.sample(now) for s in scalers)))


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


async def manifest_auth(docs: list[dict[str, Any]], auth_name: str) -> dict[str, str]:
    """The auth params the manifest's TriggerAuthentication `auth_name` yields, resolved by the
    daemon's resolver from the manifest's own Secrets (`data` base64, `stringData` plain)."""
    secrets: dict[str, dict[str, str]] = {}
    for secret in of_kind(docs, "Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        data.update(secret.get("stringData", {}))
        secrets[secret["metadata"]["name"]] = data

    async def fetch(kind: ObjectKind, namespace: str, name: str) -> Mapping[str, str] | None:
        return secrets.get(name) if kind == "Secret" else None

    (spec,) = [
        t["spec"]
        for t in of_kind(docs, "TriggerAuthentication")
        if t["metadata"]["name"] == auth_name
    ]
    return await resolve_auth_params(spec, namespace="my-project", env={}, fetch=fetch)


# -- behaviour both SQL scalers must show (each test module builds the scalers for its server) --


async def assert_query_error(scaler: SqlScaler, fragment: str, ok: SqlScaler, value: float) -> None:
    """`scaler`'s sample is a QueryError naming `fragment`; the hub's connection stays good
    for `ok`, which reads `value`."""
    with pytest.raises(QueryError) as info:
        await scaler.sample(0.0)
    assert fragment in str(info.value)
    assert (await ok.sample(0.0)).value == value
    await scaler.aclose()
    await ok.aclose()


async def assert_connection_error(scaler: SqlScaler, fragment: str, *secrets: str) -> None:
    """A ScalerError (not a QueryError) naming `fragment` and none of `secrets`."""
    with pytest.raises(ScalerError) as info:
        await guarded(scaler.sample(0.0))
    assert not isinstance(info.value, QueryError)
    assert fragment in str(info.value)
    for secret in secrets:
        assert secret not in str(info.value)
    await scaler.aclose()


async def assert_slow_query_times_out(slow: SqlScaler, fast: SqlScaler, value: float) -> None:
    """A query outliving the 1 s timeout fails its sample (its connection is dropped); the
    next poll gets a fresh connection."""
    await assert_connection_error(slow, "no answer within 1 s")
    assert (await guarded(fast.sample(1.0))).value == value
    await fast.aclose()


async def assert_hung_server_stalls_no_other(
    hung: SqlScaler, healthy: SqlScaler, value: float
) -> None:
    """The hung server's sample fails with a ScalerError after the timeout; `healthy`,
    sampled at the same time, answers first."""
    hung_task = asyncio.ensure_future(hung.sample(0.0))
    healthy_task = asyncio.ensure_future(healthy.sample(0.0))
    done, _ = await asyncio.wait({hung_task, healthy_task}, return_when=asyncio.FIRST_COMPLETED)
    assert healthy_task in done
    assert hung_task not in done
    assert healthy_task.result().value == value
    with pytest.raises(ScalerError) as info:
        await guarded(hung_task)
    assert not isinstance(info.value, QueryError)
    assert "no answer within 1 s" in str(info.value)
    await hung.aclose()
    await healthy.aclose()


class Restartable(Protocol):
    def restart(self) -> Any: ...
    def stop(self) -> None: ...
    def start(self) -> Any: ...


async def assert_restart_survived(scaler: SqlScaler, server: Restartable, value: float) -> None:
    """A restart between two polls is no error (the idle connection the server closed is
    retried once on a new one); a stopped server is a ScalerError; back, the value returns."""
    assert (await scaler.sample(0.0)).value == value
    server.restart()
    assert (await scaler.sample(1.0)).value == value
    server.stop()
    with pytest.raises(ScalerError) as info:
        await scaler.sample(2.0)
    assert not isinstance(info.value, QueryError)
    server.start()
    assert (await scaler.sample(3.0)).value == value
    await scaler.aclose()


async def assert_one_query_per_round(
    scalers: list[SqlScaler], pool: ClientPool, calls: Callable[[], int], value: float, rounds: int
) -> None:
    """Every tick all `scalers` (one query, one target) read `value`; the server counted one
    call per round, and they shared one hub and one connection."""
    for tick in range(rounds):
        samples = await sample_all(scalers, float(tick))
        assert [s.value for s in samples] == [value] * len(scalers)
    assert calls() == rounds
    hub = await scalers[0].hub()
    assert all([await s.hub() is hub for s in scalers])
    assert (hub.queries, hub.connects) == (rounds, 1)
    for s in scalers:
        await s.aclose()
    assert len(pool) == 0


class SqlServer(Protocol):
    host: str
    port: int

    def create_database(self, name: str) -> None: ...
    def create_user(self, name: str, password: str, database: str) -> None: ...


def tls_database(factory: Callable[..., SqlServer], dns_name: str) -> SqlDatabase:
    """Database `app` (user `reader`, password `pw`) on a private server offering TLS with a
    certificate from a CA the system does not trust."""
    server = factory(tls=extension_server_certs([dns_name]))
    server.create_database("app")
    server.create_user("reader", "pw", "app")
    return SqlDatabase(server.host, server.port, "app", "reader", "pw")


async def until_zero(count: Callable[[], int]) -> None:
    """Poll the server-side `count` until it is 0 (GUARD bounds the wait: a hang guard)."""

    async def wait() -> None:
        while True:
            if await asyncio.to_thread(count) == 0:
                return
            await asyncio.sleep(0.1)

    await guarded(wait())


class Freezable(Protocol):
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...


async def assert_frozen_server_fails_then_recovers(
    scaler: SqlScaler, server: Freezable, value: float
) -> None:
    """A server that stops answering on an open connection (SIGSTOP): the sample fails with a
    ScalerError after the timeout, never a zero; thawed, the next polls read `value` again."""
    assert (await scaler.sample(0.0)).value == value  # a connection is open and idle
    server.freeze()
    try:
        with pytest.raises(ScalerError) as info:
            await guarded(scaler.sample(1.0))
        assert not isinstance(info.value, QueryError)
        assert "no answer within 1 s" in str(info.value)
    finally:
        server.thaw()

    async def recovered() -> float:
        while True:  # the polls right after the thaw may still meet the stalled connection
            with contextlib.suppress(ScalerError):
                return (await scaler.sample(2.0)).value
            await asyncio.sleep(0.2)

    assert await guarded(recovered()) == value
    await scaler.aclose()
