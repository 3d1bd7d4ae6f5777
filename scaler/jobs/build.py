"""A ScaledJob's triggers built by the ScaledObject path's own `scaler.builder.build_triggers`
(metric names, env and auth resolution, every trigger's metadata, all problems at once): the
thin adapter. The ScaledJob stands in as a ScaledObject view (`ScaledJob.as_scaled_object`), env
comes from its Job template, and TriggerAuthentications, Secrets and ConfigMaps are read from
the API when the build runs (once per generation, and after repeated failures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from scaler.builder import build_triggers
from scaler.clients import ClientPool
from scaler.jobs.spec import ScaledJob
from scaler.kube.client import KubeClient
from scaler.kube.objects_io import fetch_data
from scaler.kube.paths import namespaced
from scaler.registry import Registry
from scaler.runtime import TriggerRuntime


async def build_scaled_job(
    kube: KubeClient,
    sj: ScaledJob,
    *,
    registry: Registry,
    clients: ClientPool,
    cluster_namespace: str,
    timeout: float,
) -> tuple[TriggerRuntime, ...]:
    """The ScaledJob's triggers; raises ConfigError (every problem) or KubeError."""

    async def fetch(kind: Literal["Secret", "ConfigMap"], ns: str, name: str) -> Any:
        return await fetch_data(kube, kind, ns, name)

    async def auth_lookup(kind: str, ns: str, name: str) -> Mapping[str, Any] | None:
        if kind == "ClusterTriggerAuthentication":
            path = f"/apis/keda.sh/v1alpha1/clustertriggerauthentications/{name}"
        else:
            path = namespaced("keda.sh", "v1alpha1", "triggerauthentications", ns, name)
        body = await kube.get_or_none(path)
        return None if body is None else dict(body.get("spec") or {})

    built = await build_triggers(
        sj.as_scaled_object(),
        registry=registry,
        clients=clients,
        fetch=fetch,
        auth_lookup=auth_lookup,
        pod_spec=sj.pod_spec,
        cluster_namespace=cluster_namespace,
        timeout=timeout,
    )
    return tuple(built)
