"""The ready endpoints of a Service, from its EndpointSlices (scalers that read every backend).

`EndpointDirectory.endpoints(namespace, service, port)` answers from a watch of that Service's
EndpointSlices (label `kubernetes.io/service-name`), started on the first question and stopped
once nobody asked for `IDLE_AFTER` seconds, so a thousand triggers on one Service cost one
watch and polls never LIST the API. It is handed to plugins through `ClientPool.endpoints`
(scaler.contract.EndpointSource); the `metrics-api` trigger's
`aggregateFromKubeServiceEndpoints` uses it, as KEDA does.

`address_map` (`--endpoint-address-map`) rewrites endpoint addresses before they are dialled:
for a cluster whose pod IPs Tidal cannot reach directly (a local test cluster: kube-apiserver
refuses loopback addresses in EndpointSlices, so tests publish addresses from a documentation
range and map them to the loopback address their backend listens on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from scaler.errors import QueryError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced
from scaler.kube.watch import EventType, Watcher

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"
IDLE_AFTER = 300.0  # seconds without a question before a Service's watch stops
SYNC_TIMEOUT = 10.0  # seconds a first question waits for the watch's initial list


@dataclass(slots=True)
class _Watched:
    watcher: Watcher
    task: asyncio.Task[None]
    used: float


async def _ignore(kind: EventType, obj: JSON) -> None:
    return None


def _keep(slice_: JSON) -> JSON:
    return {
        "metadata": {
            "name": (slice_.get("metadata") or {}).get("name"),
            "namespace": (slice_.get("metadata") or {}).get("namespace"),
            "resourceVersion": (slice_.get("metadata") or {}).get("resourceVersion"),
        },
        "addressType": slice_.get("addressType"),
        "endpoints": slice_.get("endpoints") or [],
        "ports": slice_.get("ports") or [],
    }


def slice_addresses(slices: list[JSON], port: str) -> list[str]:
    """`host:port` of every ready endpoint; `port` is the Service port's name or number (the
    target port of the slice whose port has that name, else the number itself)."""
    out: list[str] = []
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        number: int | None = None
        for p in s.get("ports") or []:
            if str(p.get("name") or "") == port or str(p.get("port")) == port:
                number = int(p.get("port") or 0) or None
                break
        if number is None and port.isdigit():
            number = int(port)
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for address in ep.get("addresses") or []:
                host = f"[{address}]" if ":" in str(address) else str(address)
                out.append(f"{host}:{number}")
    return sorted(set(out))


class EndpointDirectory:
    """See the module docstring. Implements scaler.contract.EndpointSource."""

    def __init__(self, kube: KubeClient, address_map: Mapping[str, str] | None = None) -> None:
        self._kube = kube
        self._map = dict(address_map or {})
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._janitor: asyncio.Task[None] | None = None

    async def endpoints(self, namespace: str, service: str, port: str) -> list[str]:
        key = (namespace, service)
        entry = self._watched.get(key)
        if entry is None:
            watcher = Watcher(
                self._kube,
                namespaced("discovery.k8s.io", "v1", "endpointslices", namespace),
                _ignore,
                label_selector=f"{SERVICE_LABEL}={service}",
                keep=_keep,
                name=f"endpointslices {namespace}/{service}",
            )
            task = asyncio.create_task(watcher.run(), name=f"endpoints {namespace}/{service}")
            entry = self._watched[key] = _Watched(watcher, task, time.monotonic())
            if self._janitor is None:
                self._janitor = asyncio.create_task(self._expire(), name="endpoints janitor")
        entry.used = time.monotonic()
        if not entry.watcher.synced.is_set():
            try:
                async with asyncio.timeout(SYNC_TIMEOUT):
                    await entry.watcher.synced.wait()
            except TimeoutError:
                raise QueryError(
                    f"the EndpointSlices of Service {namespace}/{service} could not be listed "
                    f"within {SYNC_TIMEOUT:.0f} s"
                ) from None
        found = slice_addresses(list(entry.watcher.objects.values()), port)
        return [self._mapped(a) for a in found]

    def _mapped(self, host_port: str) -> str:
        host, _, port = host_port.rpartition(":")
        bare = host.strip("[]")
        if bare in self._map:
            to = self._map[bare]
            return f"[{to}]:{port}" if ":" in to else f"{to}:{port}"
        return host_port

    async def _expire(self) -> None:
        while self._watched:
            await asyncio.sleep(IDLE_AFTER / 5)
            now = time.monotonic()
            for key, entry in list(self._watched.items()):
                if now - entry.used > IDLE_AFTER:
                    del self._watched[key]
                    entry.task.cancel()
        self._janitor = None

    async def aclose(self) -> None:
        tasks = [e.task for e in self._watched.values()]
        if self._janitor is not None:
            tasks.append(self._janitor)
        self._watched.clear()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
