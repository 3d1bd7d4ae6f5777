"""TriggerAuthentication resolution and container env resolution (KEDA's scale resolvers).

Both take an async ``fetch(kind, namespace, name)`` that returns the *decoded* data of a Secret
or ConfigMap, or None when it does not exist (a `KubeError` with status 404 means the same).
Any other fetch failure propagates: it is transient, not a configuration problem.

Supported auth sources: ``secretTargetRef``, ``configMapTargetRef``, ``env`` and
``podIdentity.provider: none``. Every other source raises `UnsupportedError` naming it; in
particular Tidal never reads a file from a user-supplied path (``filePath``). Messages name the
Secret and key, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from scaler.errors import ConfigError, KubeError, UnsupportedError

ObjectKind = Literal["Secret", "ConfigMap"]
Fetch = Callable[[ObjectKind, str, str], Awaitable[Mapping[str, str] | None]]
AuthKind = Literal["TriggerAuthentication", "ClusterTriggerAuthentication"]

UNSUPPORTED_SOURCES = (
    "hashiCorpVault",
    "azureKeyVault",
    "gcpSecretManager",
    "awsSecretManager",
    "filePath",
    "boundServiceAccountToken",
    "oauth2",
)
_SUPPORTED_SOURCES = ("podIdentity", "secretTargetRef", "configMapTargetRef", "env")
_TARGET_REFS: tuple[tuple[str, ObjectKind], ...] = (
    ("secretTargetRef", "Secret"),
    ("configMapTargetRef", "ConfigMap"),
)
_ENV_FROM_REFS: tuple[tuple[str, ObjectKind], ...] = (
    ("secretRef", "Secret"),
    ("configMapRef", "ConfigMap"),
)
_KEY_REFS: tuple[tuple[str, ObjectKind], ...] = (
    ("secretKeyRef", "Secret"),
    ("configMapKeyRef", "ConfigMap"),
)


class _Objects:
    """Fetches each Secret/ConfigMap once per resolution."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._cache: dict[tuple[ObjectKind, str, str], Mapping[str, str] | None] = {}

    async def get(self, kind: ObjectKind, namespace: str, name: str) -> Mapping[str, str] | None:
        key = (kind, namespace, name)
        if key not in self._cache:
            try:
                self._cache[key] = await self._fetch(kind, namespace, name)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]


async def resolve_auth_params(
    spec: Mapping[str, Any],
    *,
    namespace: str,
    env: Mapping[str, str],
    fetch: Fetch,
    kind: AuthKind = "TriggerAuthentication",
    cluster_namespace: str = "",
    container_envs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The auth params one (Cluster)TriggerAuthentication `spec` yields for a trigger.

    `namespace` is the ScaledObject's; a ClusterTriggerAuthentication reads its Secrets and
    ConfigMaps from `cluster_namespace` instead (KEDA_CLUSTER_OBJECT_NAMESPACE). `env` is the
    target container's resolved env; `container_envs` (by container name) serves ``env`` entries
    that name another ``containerName``.
    """
    if kind == "ClusterTriggerAuthentication":
        if not cluster_namespace:
            raise ConfigError("ClusterTriggerAuthentication needs a cluster object namespace")
        namespace = cluster_namespace
    unsupported = [_unsupported_message(src) for src in UNSUPPORTED_SOURCES if spec.get(src)]
    problems: list[str] = []
    provider = _pod_identity_provider(spec.get("podIdentity"))
    if provider not in ("", "none"):
        unsupported.append(
            f"podIdentity provider '{provider}' is not supported by Tidal (only 'none');"
            " use secretTargetRef, configMapTargetRef or env"
        )
    for key in spec:
        if key not in _SUPPORTED_SOURCES and key not in UNSUPPORTED_SOURCES:
            problems.append(f"unknown authentication source '{key}'")

    params: dict[str, str] = {}
    objects = _Objects(fetch)
    for source, obj_kind in _TARGET_REFS:
        for i, ref in enumerate(_entries(spec.get(source), source, problems)):
            parameter, name, key = (_field(ref, f) for f in ("parameter", "name", "key"))
            if not (parameter and name and key):
                problems.append(f"{source}[{i}] needs parameter, name and key")
                continue
            data = await objects.get(obj_kind, namespace, name)
            if data is None:
                problems.append(f"{obj_kind} '{namespace}/{name}' not found ({source}[{i}])")
            elif key not in data:
                problems.append(f"{obj_kind} '{namespace}/{name}' has no key '{key}'")
            else:
                params[parameter] = data[key]
    for i, ref in enumerate(_entries(spec.get("env"), "env", problems)):
        parameter, name = _field(ref, "parameter"), _field(ref, "name")
        container = _field(ref, "containerName")
        if not (parameter and name):
            problems.append(f"env[{i}] needs parameter and name")
            continue
        source_env = env
        if container and container_envs is not None:
            if container not in container_envs:
                problems.append(f"env[{i}]: container '{container}' not found")
                continue
            source_env = container_envs[container]
        if name not in source_env:
            problems.append(f"env[{i}]: variable '{name}' is not set in the container's env")
            continue
        params[parameter] = source_env[name]
    if unsupported:
        raise UnsupportedError(unsupported + problems)
    if problems:
        raise ConfigError(problems)
    return params


def _unsupported_message(source: str) -> str:
    if source == "filePath":
        return (
            "authentication source 'filePath' is not supported by Tidal: it never reads files"
            " from user-supplied paths; use secretTargetRef"
        )
    return (
        f"authentication source '{source}' is not supported by Tidal;"
        " use secretTargetRef, configMapTargetRef or env"
    )


def _pod_identity_provider(value: object) -> str:
    if not isinstance(value, Mapping):
        return ""
    provider = value.get("provider")
    return provider.strip() if isinstance(provider, str) else ""


def _entries(value: object, source: str, problems: list[str]) -> Sequence[Mapping[str, Any]]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        problems.append(f"{source} must be a list of objects")
        return ()
    return value


def _field(ref: Mapping[str, Any], name: str) -> str:
    value = ref.get(name)
    return value.strip() if isinstance(value, str) else ""


# -- container env ---------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def pick_container(pod_spec: Mapping[str, Any], name: str | None = None) -> Mapping[str, Any]:
    """`envSourceContainerName`'s container, or the first one (KEDA's default)."""
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ConfigError("the scale target's pod template has no containers")
    if not name:
        first = containers[0]
        return first if isinstance(first, Mapping) else {}
    for container in containers:
        if isinstance(container, Mapping) and container.get("name") == name:
            return container
    raise ConfigError(f"container '{name}' not found in the scale target's pod template")


async def resolve_container_env(
    pod_spec: Mapping[str, Any],
    namespace: str,
    fetch: Fetch,
    container_name: str | None = None,
) -> dict[str, str]:
    """The env of one container as the kubelet would build it (without downward API fields).

    ``envFrom`` (secretRef / configMapRef, with prefix) first, then ``env`` (literal values with
    ``$(VAR)`` expansion, secretKeyRef, configMapKeyRef) overriding it. A missing non-optional
    Secret, ConfigMap or key is a ConfigError naming it; fieldRef/resourceFieldRef are skipped.
    """
    container = pick_container(pod_spec, container_name)
    objects = _Objects(fetch)
    problems: list[str] = []
    out: dict[str, str] = {}
    env_from = container.get("envFrom") or []
    for source in env_from if isinstance(env_from, list) else []:
        if not isinstance(source, Mapping):
            continue
        prefix = source.get("prefix") or ""
        for field, kind in _ENV_FROM_REFS:
            ref = source.get(field)
            if not isinstance(ref, Mapping):
                continue
            name = _field(ref, "name")
            data = await objects.get(kind, namespace, name)
            if data is None:
                if not ref.get("optional"):
                    problems.append(f"{kind} '{namespace}/{name}' not found (envFrom)")
                continue
            for key, value in data.items():
                out[f"{prefix}{key}"] = value
    env = container.get("env") or []
    for var in env if isinstance(env, list) else []:
        if not isinstance(var, Mapping) or not isinstance(var.get("name"), str):
            continue
        name = var["name"]
        value_from = var.get("valueFrom")
        if isinstance(value_from, Mapping):
            resolved = await _value_from(value_from, namespace, objects, problems, name)
            if resolved is not None:
                out[name] = resolved
        else:
            literal = var.get("value")
            out[name] = _expand(literal if isinstance(literal, str) else "", out)
    if problems:
        raise ConfigError(problems)
    return out


async def _value_from(
    value_from: Mapping[str, Any],
    namespace: str,
    objects: _Objects,
    problems: list[str],
    var: str,
) -> str | None:
    for field, kind in _KEY_REFS:
        ref = value_from.get(field)
        if not isinstance(ref, Mapping):
            continue
        name, key = _field(ref, "name"), _field(ref, "key")
        optional = bool(ref.get("optional"))
        data = await objects.get(kind, namespace, name)
        if data is None:
            if not optional:
                problems.append(f"{kind} '{namespace}/{name}' not found (env {var})")
            return None
        if key not in data:
            if not optional:
                problems.append(f"{kind} '{namespace}/{name}' has no key '{key}' (env {var})")
            return None
        return data[key]
    return None  # fieldRef / resourceFieldRef: known only inside the pod


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables expand, $$ escapes, others stay."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(sub, value)
