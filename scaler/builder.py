"""Building an object's scalers: the one path from a parsed ScaledObject to a `Build` (its scale
target, its scalers and metric specs, the Secrets and ConfigMaps it read) or a `BuildFailure`.

`Builder.build(rt)` runs the UNBUILT → BUILDING → RUNNING/BLOCKED transitions of
scaler.runtime. Every await may see the object edited, deleted or an input changed: such a
build closes what it built and registers nothing (no store entry, reference-index entry, push
task or subscription outlives it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from scaler.admission import ownership_problem
from scaler.auth import Fetch, resolve_auth_params, resolve_container_env
from scaler.clients import ClientPool
from scaler.contract import Scaler, fold_metric_name
from scaler.errors import ConfigError, KubeError, ScalerError, TidalError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.objects_io import fetch_data
from scaler.kube.paths import GVKR, ResourceMapper
from scaler.kube.targets import TargetCache
from scaler.modifiers import composite_for
from scaler.objects import ScaledObject, Trigger, trigger_context
from scaler.push import PUSH_ANNOTATION, push_loop
from scaler.registry import Prepared, Registry
from scaler.runtime import Build, BuildFailure, ObjectRuntime, Ref, TriggerRuntime, close_scalers
from scaler.settings import Settings
from scaler.store import MetricStore
from scaler.telemetry import Telemetry, TriggerLabels

log = logging.getLogger(__name__)

Key = tuple[str, str]
AuthLookup = Callable[[str, str, str], Awaitable[Mapping[str, Any] | None]]
"""(kind, namespace, name) → the (Cluster)TriggerAuthentication's spec, or None if missing."""


class Builder:
    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        *,
        registry: Registry,
        clients: ClientPool,
        mapper: ResourceMapper,
        targets: TargetCache,
        store: MetricStore,
        telemetry: Telemetry,
        auth_lookup: AuthLookup,
        others: Callable[[str, str], Iterable[ScaledObject]],
        hpas: Callable[[str, str], Mapping[tuple[str, str], JSON]],
        index_refs: Callable[[Key, frozenset[Ref]], None],
        wake: Callable[[Key], None],
    ) -> None:
        self._kube = kube
        self._settings = settings
        self._registry = registry
        self._clients = clients
        self._mapper = mapper
        self._targets = targets
        self._store = store
        self._telemetry = telemetry
        self._auth_lookup = auth_lookup
        self._others = others
        self._hpas = hpas
        self._index_refs = index_refs
        self._wake = wake
        self.finished = 0  # builds that ran to a result (monotonic; scaler.heapfreeze reads it)

    async def build(self, rt: ObjectRuntime) -> None:
        """(Re)build `rt`'s scalers and apply the result, unless it went stale meanwhile."""
        so = rt.so
        await rt.close()
        if not rt.needs_build:
            return  # retired while its previous build's resources were closing
        epoch = rt.begin_build()
        read: set[Ref] = set()
        notes: list[str] = []
        result = await self._build(rt, read, notes)
        self.finished += 1
        if result is None:  # retired while resolving the target
            return
        if not rt.finish_build(result, epoch):
            if isinstance(result, Build):
                await close_scalers(result.triggers)
            if not rt.is_retired():
                self._wake(so.key)  # an input changed meanwhile: build again from it at once
            return
        # Also after a failure: a missing Secret that appears later rebuilds the object.
        self._index_refs(so.key, result.refs)
        if isinstance(result, BuildFailure):
            return
        if notes and not rt.unknown_keys_warned:
            rt.unknown_keys_warned = True
            log.warning(
                "trigger metadata has unknown keys or warnings",
                extra={"object": f"{so.namespace}/{so.name}", "notes": notes},
            )
        fallback = so.fallback.failure_threshold if so.fallback else None
        self._store.register(
            so.namespace,
            so.name,
            result.specs,
            fallback,
            max_age=max_age(so, self._settings),
            composite=composite_for(so, [t.spec.name for t in result.triggers]),
        )
        for t in result.triggers:
            if t.spec.kind == "External":
                labels = TriggerLabels(
                    so.namespace, t.spec.name, so.name, t.trigger.type, t.trigger.index
                )
                self._telemetry.record_target(labels, t.spec.target)
        if so.annotations.get(PUSH_ANNOTATION, "").strip().lower() in ("false", "0", "off"):
            return
        rt.attach_push(
            asyncio.create_task(
                push_loop(
                    so.key,
                    t,
                    wake=self._wake,
                    telemetry=self._telemetry,
                    recheck=self._settings.poll.push_recheck,
                ),
                name=f"push {so.key}",
            )
            for t in result.triggers
            if t.scaler is not None and callable(getattr(t.scaler, "wakeups", None))
        )

    async def _build(
        self, rt: ObjectRuntime, read: set[Ref], notes: list[str]
    ) -> Build | BuildFailure | None:
        so = rt.so

        async def recording_fetch(kind: Literal["Secret", "ConfigMap"], ns: str, name: str) -> Any:
            read.add((kind, ns, name))
            return await fetch_data(self._kube, kind, ns, name)

        target: GVKR | None = None
        try:
            ref = so.scale_target_ref
            target = await self._mapper.resolve(ref.api_version, ref.kind)
            if rt.is_retired():
                return None
            # Only the objects and HPAs on a workload of this name (indexed): O(matches).
            on = (so.namespace, ref.name)
            owner = ownership_problem(so, target, self._others(*on), self._hpas(*on))
            if owner is not None:
                # Re-checked every poll: the other owner may go away.
                return BuildFailure(ConfigError(owner), target, frozenset(read), retry=True)
            containers = self._targets.containers(target, so.namespace, ref.name)
            built = await build_triggers(
                so,
                registry=self._registry,
                clients=self._clients,
                fetch=recording_fetch,
                auth_lookup=self._auth_lookup,
                pod_spec=None if containers is None else {"containers": containers},
                cluster_namespace=self._settings.watch.cluster_object_namespace,
                timeout=self._settings.poll.http_timeout,
                notes=notes,
            )
        except ConfigError as exc:
            return BuildFailure(exc, target, frozenset(read), retry=False)
        except KubeError as exc:
            # Transient: try again next poll.
            error = ConfigError(f"scale target: {exc}")
            return BuildFailure(error, target, frozenset(read), retry=True)
        except ScalerError as exc:
            # A source the spec depends on did not answer (prepare()): try again next poll.
            return BuildFailure(ConfigError(str(exc)), target, frozenset(read), retry=True)
        loop_now = asyncio.get_running_loop().time()
        return Build(target, tuple(built), frozenset(read), loop_now)


STALE_AFTER_POLLS = 3  # a metric value not refreshed for this many polls is not served
MIN_STALE_INTERVAL = 5.0  # seconds: the polling interval counted at least this long for that


def max_age(so: ScaledObject, settings: Settings) -> float:
    """How old a metric value may be when the HPA reads it (see README: a value no poll
    refreshed for this long is an error, never served as fresh)."""
    interval = max(float(so.polling_interval), MIN_STALE_INTERVAL)
    return STALE_AFTER_POLLS * interval + settings.poll.http_timeout


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
        ctx = trigger_context(so, trig, auth_params=auth, resolved_env=env, timeout=timeout)
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
            prepare = getattr(scaler, "prepare", None)
            if callable(prepare):  # the spec comes from the source (external: GetMetricSpec)
                try:
                    await prepare()
                except TidalError as exc:
                    await scaler.aclose()
                    raise ScalerError(f"trigger {trig.index} ({trig.type}): {exc}") from exc
            built.append(TriggerRuntime(trig, scaler.metric_spec(), _sampled(prep, scaler)))
    except TidalError:
        await close_scalers(built)
        raise
    problems = duplicate_metric_names(t.spec.name for t in built if t.spec.kind == "External")
    if problems:
        await close_scalers(built)
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
