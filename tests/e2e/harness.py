"""Helpers for end-to-end tests: CRDs installed, workloads, ScaledObjects, an in-process daemon.

The daemon runs in the test's own event loop (a task), against the real kube-apiserver and
kube-controller-manager of the session; tests talk to the API with Tidal's own raw JSON client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from scaler.daemon import Daemon
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import hpa, namespaced, scaled_objects
from scaler.service import Service
from scaler.settings import LeaderSettings, PollSettings, ServeSettings, Settings, WatchSettings

T = TypeVar("T")


def settings_for(kubeconfig: Path, **overrides: Any) -> Settings:
    leader = overrides.pop("leader", LeaderSettings(enabled=False))
    return Settings(
        kubeconfig=str(kubeconfig),
        watch=overrides.pop("watch", WatchSettings(cluster_object_namespace="tidal-system")),
        leader=leader,
        poll=overrides.pop("poll", PollSettings(http_timeout=2.0)),
        serve=overrides.pop("serve", ServeSettings(metrics_address="127.0.0.1:0")),
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_service(kubeconfig: Path, **overrides: Any) -> AsyncIterator[Service]:
    """Tidal as `tidal run` runs it (daemon + health port + optional metrics API), in-process."""
    service = Service(settings_for(kubeconfig, **overrides))
    async with service:
        daemon = service.daemon
        assert daemon is not None
        async with asyncio.timeout(30):
            while not daemon.started.is_set():
                for task in service._tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
        yield service


@contextlib.asynccontextmanager
async def running_daemon(kubeconfig: Path, **overrides: Any) -> AsyncIterator[Daemon]:
    async with running_service(kubeconfig, **overrides) as service:
        assert service.daemon is not None
        yield service.daemon


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll `probe` until `check(value)`; on timeout fail with the last value seen."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        last = await probe()
        if check(last):
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        await asyncio.sleep(0.2)


def deployment(name: str, replicas: int = 0, env: list[JSON] | None = None) -> JSON:
    container: JSON = {"name": "app", "image": "registry.invalid/app:1"}
    if env:
        container["env"] = env
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def scaled_object(name: str, target: str, triggers: list[JSON], **spec: Any) -> JSON:
    body: JSON = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": target}, "triggers": triggers, **spec},
    }
    return body


def redis_trigger(address: str, list_name: str, **metadata: str) -> JSON:
    return {
        "type": "redis",
        "metadata": {"address": address, "listName": list_name, **metadata},
    }


class Cluster:
    """Small async conveniences over Tidal's raw client for one namespace."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.ns = namespace

    async def create_deployment(self, body: JSON) -> JSON:
        return await self.kube.create(namespaced("apps", "v1", "deployments", self.ns), body)

    async def replicas(self, name: str, resource: str = "deployments") -> int:
        body = await self.kube.get(namespaced("apps", "v1", resource, self.ns, name))
        return int(body["spec"].get("replicas", 0))

    async def create_address_auth(self, name: str, address: str) -> None:
        """A Secret holding `address` and a TriggerAuthentication `name` that reads the
        trigger's `address` parameter from it."""
        await self.create_secret_auth(name, "address", f"{name}-secret", address)

    async def create_secret_auth(
        self, name: str, parameter: str, secret: str, value: str | None
    ) -> None:
        """A TriggerAuthentication `name` that reads the trigger parameter `parameter` from the
        key of that name in Secret `secret`, which holds `value` (None: the Secret is not
        created, so a build that reads it fails)."""
        if value is not None:
            await self.kube.create(
                namespaced("", "v1", "secrets", self.ns),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret},
                    "stringData": {parameter: value},
                },
            )
        await self.kube.create(
            namespaced("keda.sh", "v1alpha1", "triggerauthentications", self.ns),
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": name},
                "spec": {
                    "secretTargetRef": [{"parameter": parameter, "name": secret, "key": parameter}]
                },
            },
        )

    async def create_so(self, body: JSON) -> JSON:
        return await self.kube.create(scaled_objects(self.ns), body)

    async def get_so(self, name: str) -> JSON:
        return await self.kube.get(scaled_objects(self.ns, name))

    async def patch_so(self, name: str, patch: JSON) -> JSON:
        return await self.kube.merge_patch(scaled_objects(self.ns, name), patch)

    async def delete_so(self, name: str) -> None:
        await self.kube.delete(scaled_objects(self.ns, name))

    async def hpa(self, name: str) -> JSON | None:
        return await self.kube.get_or_none(hpa(self.ns, name))

    async def condition(self, so_name: str, type_: str) -> JSON | None:
        so = await self.get_so(so_name)
        for c in so.get("status", {}).get("conditions", []):
            if c.get("type") == type_:
                return dict(c)
        return None

    async def events(self, so_name: str) -> list[JSON]:
        body = await self.kube.get(
            namespaced("", "v1", "events", self.ns),
            fieldSelector=f"involvedObject.name={so_name}",
        )
        return list(body.get("items", []))
