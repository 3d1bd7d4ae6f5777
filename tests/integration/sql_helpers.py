"""What the postgresql and mysql scaler tests share: triggers, KEDA manifests resolved as the
daemon resolves them, and the guard that bounds a wait for an error that must come."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import yaml

from scaler.auth import ObjectKind, resolve_auth_params
from scaler.clients import ClientPool
from scaler.contract import Sample, TriggerContext
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
