"""A trigger's metadata checked the way the daemon's build parses it, without the values the
check cannot see.

The daemon (scaler.builder `build_triggers`) resolves the target container's env and the
trigger's (Cluster)TriggerAuthentication, then parses the metadata with `Registry.prepare`.
A check (the admission webhook, `tidal check`) runs the same resolution (scaler.auth) and the
same parser (scaler.params), but it reads no Secret or ConfigMap it was not given: a value
that would come from one is *unseen*. An unseen value is present (it is no "missing required
parameter" error) and stands in as a placeholder valid for its parameter's type. When any
value is unseen the scaler's cross-field `validate` hook is left out, since it may depend on
that value; the daemon runs it at build time. An authenticationRef to an object the check does
not know is not an error either (it may be applied after the ScaledObject): the parameters it
could provide count as unseen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from scaler.auth import ObjectKind, pick_container, resolve_auth_params, resolve_container_env
from scaler.errors import ConfigError
from scaler.objects import ScaledObject, Trigger, trigger_context
from scaler.params import Param, parse
from scaler.registry import Registry

UNSEEN = "\x00unseen\x00"  # the value of a Secret/ConfigMap key or env var the check can't read

AuthSpec = Callable[[str, str, str], Mapping[str, Any] | None]
"""(kind, namespace, name) → a (Cluster)TriggerAuthentication's spec, or None when unknown."""
KnownData = Callable[[ObjectKind, str, str], Mapping[str, str] | None]
"""(kind, namespace, name) → a Secret's or ConfigMap's decoded data, or None when unknown."""
Fetch = Callable[[ObjectKind, str, str], Awaitable[Mapping[str, str] | None]]

Located = tuple[str, str]  # (field path, message)


class _Unseen(Mapping[str, str]):
    """The data of a Secret or ConfigMap the check was not given: every key, value unseen."""

    def __getitem__(self, key: str) -> str:
        return UNSEEN

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class OpenEnv(Mapping[str, str]):
    """A container's env as far as the check knows it. `open`: variables may exist that the
    check cannot list (an envFrom it could not read, or an unknown workload); they read as
    unseen."""

    def __init__(self, known: Mapping[str, str], *, open_: bool) -> None:
        self._known = dict(known)
        self.open = open_

    def __getitem__(self, key: str) -> str:
        if key in self._known:
            return self._known[key]
        if self.open:
            return UNSEEN
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


UNKNOWN_ENV = OpenEnv({}, open_=True)


def fetcher(known: KnownData) -> Fetch:
    """scaler.auth's fetch over what the check was given; anything else is unseen."""

    async def fetch(kind: ObjectKind, namespace: str, name: str) -> Mapping[str, str]:
        data = known(kind, namespace, name)
        return _Unseen() if data is None else data

    return fetch


async def container_env(
    so: ScaledObject, containers: Sequence[Mapping[str, Any]] | None, known: KnownData
) -> tuple[Mapping[str, str], list[Located]]:
    """The env `*FromEnv` parameters read (scaler.auth `resolve_container_env`, as the daemon
    does), and the problems resolving it; every variable is unseen when the workload is not
    known."""
    if containers is None:
        return UNKNOWN_ENV, []
    pod = {"containers": list(containers)}
    name = so.scale_target_ref.env_source_container_name
    try:
        container = pick_container(pod, name)
        env = await resolve_container_env(pod, so.namespace, fetcher(known), name)
    except ConfigError as exc:
        return UNKNOWN_ENV, [
            ("spec.scaleTargetRef.envSourceContainerName", p) for p in exc.problems
        ]
    open_ = False
    for source in container.get("envFrom") or []:
        refs: tuple[tuple[str, ObjectKind], ...] = (
            ("secretRef", "Secret"),
            ("configMapRef", "ConfigMap"),
        )
        for field, kind in refs:
            ref = source.get(field) if isinstance(source, Mapping) else None
            if isinstance(ref, Mapping) and known(kind, so.namespace, str(ref.get("name"))) is None:
                open_ = True
    return OpenEnv(env, open_=open_), []


def placeholder(param: Param) -> str:
    """A value `param` accepts, standing in for one the check cannot see."""
    if param.allowed:
        return param.allowed[0]
    if param.type in ("int", "float", "duration"):
        n = 1
        if param.minimum is not None:
            n = max(n, math.ceil(param.minimum))
        if param.above is not None:
            n = max(n, math.floor(param.above) + 1)
        return f"{n}s" if param.type == "duration" else str(n)
    return {"bool": "false", "map": "unseen=unseen"}.get(param.type, "unseen")


def _param(params: Sequence[Param], name: str) -> Param | None:
    return next((p for p in params if name in p.names), None)


async def check_trigger(
    so: ScaledObject,
    trig: Trigger,
    env: Mapping[str, str],
    *,
    registry: Registry,
    auth_spec: AuthSpec,
    known: KnownData,
    cluster_namespace: str,
    timeout: float = 3.0,
) -> list[Located]:
    """The problems the daemon's build would report for this trigger, with their fields."""
    path = f"spec.triggers[{trig.index}]"
    try:
        factory = registry.load(trig.type)
    except ConfigError as exc:
        return [(f"{path}.type", p) for p in exc.problems]
    params = factory.PARAMS
    auth: dict[str, str] = {}
    unseen = False
    if trig.authentication_ref is not None:
        ref = trig.authentication_ref
        spec = auth_spec(ref.kind, so.namespace, ref.name)
        if spec is None:
            unseen = True
            for p in params:
                if p.required and "auth" in p.sources:
                    auth[p.name] = placeholder(p)
        else:
            try:
                resolved = await resolve_auth_params(
                    spec,
                    namespace=so.namespace,
                    env=env,
                    fetch=fetcher(known),
                    kind=ref.kind,
                    cluster_namespace=cluster_namespace or "unseen",
                    container_envs={},  # as scaler.builder passes it
                )
            except ConfigError as exc:
                return [(f"{path}.authenticationRef", p) for p in exc.problems]
            for key, value in resolved.items():
                if value != UNSEEN:
                    auth[key] = value
                elif (param := _param(params, key)) is not None:
                    auth[key] = placeholder(param)
                    unseen = True
    resolved_env: dict[str, str] = {}
    for p in params:
        if "env" not in p.sources:
            continue
        for name in p.names:
            var = (trig.metadata.get(f"{name}FromEnv") or "").strip()
            found = env.get(var) if var else None
            if found == UNSEEN:
                resolved_env[var] = placeholder(p)
                unseen = True
            elif found is not None:
                resolved_env[var] = found
    ctx = trigger_context(so, trig, auth_params=auth, resolved_env=resolved_env, timeout=timeout)
    try:
        if unseen:
            parse(params, ctx)  # field by field only: validate() may need the unseen values
        else:
            registry.prepare(ctx)
    except ConfigError as exc:
        return [(_metadata_path(path, trig, p), p) for p in exc.problems]
    return []


_NAMED = re.compile(r"(?:parameter|parsing) '([^']+)'")


def _metadata_path(path: str, trig: Trigger, message: str) -> str:
    """`spec.triggers[i].metadata.<key>` when the message names one key, else the metadata."""
    match = _NAMED.search(message)
    if match is None:
        return f"{path}.metadata"
    key = match.group(1)
    from_env = f"{key}FromEnv"
    if key not in trig.metadata and from_env in trig.metadata:
        key = from_env
    return f"{path}.metadata.{key}"
