"""One ScaledObject as the daemon runs it: its parsed spec, its scalers, and what it last did."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scaler.auth import Fetch, resolve_auth_params, resolve_container_env
from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Scaler, TriggerContext, fold_metric_name
from scaler.errors import ConfigError, ScalerError, TidalError
from scaler.kube.paths import GVKR
from scaler.objects import ScaledObject, Trigger
from scaler.registry import Prepared, Registry

log = logging.getLogger(__name__)

AuthLookup = Callable[[str, str, str], Awaitable[Mapping[str, Any] | None]]
"""(kind, namespace, name) → the (Cluster)TriggerAuthentication's spec, or None if missing."""


@dataclass(slots=True)
class TriggerRuntime:
    trigger: Trigger
    spec: MetricSpec
    scaler: Scaler | None  # None for cpu/memory (never sampled)


@dataclass(slots=True)
class ObjectRuntime:
    """Mutable per-object state, touched only from the event loop."""

    so: ScaledObject
    generation: int = 0  # unique per runtime: work started for an older one is dropped
    polling: bool = False  # a poll of this runtime is in flight (it closes a replaced runtime)
    triggers: list[TriggerRuntime] = field(default_factory=list)
    config_error: ConfigError | None = None
    unknown_keys_warned: bool = False
    needs_rebuild: bool = False
    hpa_dirty: bool = True
    last_active_time: float | None = None
    last_status: dict[str, Any] | None = None  # what we last wrote (or read) as status
    polls: int = 0
    finalizer_added: bool = False
    target: GVKR | None = None
    original_replicas: int | None = None
    hpa_present: bool = True  # assume an HPA may exist until we deleted it
    push_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    rebuilt_at: float = float("-inf")  # loop time of the last (re)build
    refs: frozenset[tuple[str, str, str]] = frozenset()  # Secrets/ConfigMaps read at build
    hpa_seen: object = None  # fingerprint of the HPA as last written or checked
    status_key: object = None  # what the last status check was built from (skip when equal)
    gauges: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # per-trigger children

    @property
    def specs(self) -> list[MetricSpec]:
        return [t.spec for t in self.triggers]

    async def close(self) -> None:
        tasks, self.push_tasks = self.push_tasks, []
        await cancel_and_wait(tasks)
        for t in self.triggers:
            if t.scaler is not None:
                with contextlib.suppress(Exception):
                    await t.scaler.aclose()
        self.triggers = []


CANCEL_ATTEMPTS = 10
CANCEL_WAIT = 2.0  # seconds per attempt: long enough for a task's own clean-up to finish


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until they have ended. A task that swallows a cancellation (a
    client library awaiting inside may) is cancelled again, so no push subscription outlives its
    object; after ~20 s of that the survivors are logged and left."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(CANCEL_ATTEMPTS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
    if pending:
        log.warning(
            "tasks did not stop when cancelled",
            extra={"tasks": sorted(t.get_name() for t in pending)},
        )


async def build_triggers(
    so: ScaledObject,
    *,
    registry: Registry,
    clients: ClientPool,
    fetch: Fetch,
    auth_lookup: AuthLookup,
    pod_spec: Mapping[str, Any] | None,
    cluster_namespace: str,
    timeout: float,
    notes: list[str] | None = None,
) -> list[TriggerRuntime]:
    """Resolve env and auth, parse every trigger and build its scaler.

    Raises one ConfigError listing the problems of every trigger; builds nothing in that case
    (scalers already built are closed), so a half-configured object never scales. Unknown
    metadata keys and other non-fatal remarks are appended to `notes` for the caller to log once.
    """
    problems: list[str] = []
    env: dict[str, str] = {}
    container_envs: dict[str, Mapping[str, str]] = {}
    if pod_spec is not None and any(_needs_env(t) for t in so.triggers):
        try:
            env = await resolve_container_env(
                pod_spec, so.namespace, fetch, so.scale_target_ref.env_source_container_name
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    prepared: list[tuple[Trigger, Prepared]] = []
    for trig in so.triggers:
        auth: dict[str, str] = {}
        if trig.authentication_ref is not None:
            ref = trig.authentication_ref
            spec = await auth_lookup(ref.kind, so.namespace, ref.name)
            if spec is None:
                problems.append(f"trigger {trig.index}: {ref.kind} '{ref.name}' not found")
                continue
            try:
                auth = await resolve_auth_params(
                    spec,
                    namespace=so.namespace,
                    env=env,
                    fetch=fetch,
                    kind=ref.kind,
                    cluster_namespace=cluster_namespace,
                    container_envs=container_envs,
                )
            except ConfigError as exc:
                problems.extend(f"trigger {trig.index}: {p}" for p in exc.problems)
                continue
        ctx = TriggerContext(
            namespace=so.namespace,
            object_name=so.name,
            index=trig.index,
            type=trig.type,
            name=trig.name,
            metadata=trig.metadata,
            metric_type=trig.metric_type,
            auth_params=auth,
            resolved_env=env,
            timeout=timeout,
        )
        try:
            prep = registry.prepare(ctx)
            prepared.append((trig, prep))
            if notes is not None:
                config = prep.config
                keys = getattr(config, "unknown_keys", ())
                if keys:
                    notes.append(f"trigger {trig.index} ({trig.type}): unknown keys {sorted(keys)}")
                notes.extend(f"trigger {trig.index}: {w}" for w in getattr(config, "warnings", ()))
        except ConfigError as exc:
            problems.extend(f"trigger {trig.index} ({trig.type}): {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    built: list[TriggerRuntime] = []
    try:
        for trig, prep in prepared:
            scaler = registry.construct(prep, clients)
            built.append(TriggerRuntime(trig, scaler.metric_spec(), _sampled(prep, scaler)))
    except TidalError:
        for t in built:
            if t.scaler is not None:
                await t.scaler.aclose()
        raise
    problems = duplicate_metric_names(t.spec.name for t in built if t.spec.kind == "External")
    if problems:
        for t in built:
            if t.scaler is not None:
                await t.scaler.aclose()
        raise ConfigError(problems)
    return built


def duplicate_metric_names(names: Iterable[str]) -> list[str]:
    """KEDA's rule (external metric names are unique in an object), compared ignoring case:
    the HPA asks for metric names in lower case, so `s0-redis-Jobs` and `s0-redis-jobs` would
    be one metric to it."""
    seen: dict[str, list[str]] = {}
    for name in names:
        seen.setdefault(fold_metric_name(name), []).append(name)
    problems = []
    for same in seen.values():
        if len(same) == 1:
            continue
        if len(set(same)) == 1:
            problems.append(f"duplicate external metric name {same[0]}")
        else:
            listed = ", ".join(sorted(set(same)))
            problems.append(
                f"external metric names {listed} differ only in case "
                "(the HPA asks for metric names in lower case)"
            )
    return sorted(problems)


def _needs_env(trig: Trigger) -> bool:
    return trig.authentication_ref is not None or any(k.endswith("FromEnv") for k in trig.metadata)


def _sampled(prep: Prepared, scaler: Scaler) -> Scaler | None:
    """The scaler to sample, or None for a class that declares itself never sampled (cpu and
    memory: the registry holds `SAMPLED` to `is_resource_trigger`)."""
    return scaler if prep.factory.SAMPLED else None


async def sample_with_timeout(scaler: Scaler, now: float, timeout: float) -> Any:
    """One sample bounded by `timeout` (a timeout is a ScalerError, never a 0)."""
    try:
        async with asyncio.timeout(timeout):
            return await scaler.sample(now)
    except TimeoutError as exc:
        raise ScalerError(f"query timed out after {timeout:.1f}s") from exc
