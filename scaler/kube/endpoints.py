"""The ready endpoints of a Service, from its EndpointSlices (scalers that read every backend).

`EndpointDirectory.endpoints(namespace, service, port)` answers from a watch of that Service's
EndpointSlices (label `kubernetes.io/service-name`; scaler.kube.lazywatch: started on the first
question, stopped once unused), so a thousand triggers on one Service cost one watch and polls
never LIST the API. It is handed to plugins through `ClientPool.endpoints`
(scaler.contract.EndpointSource); the `metrics-api` trigger's
`aggregateFromKubeServiceEndpoints` uses it, as KEDA does.

`address_map` (`--endpoint-address-map`) rewrites endpoint addresses before they are dialled:
for a cluster whose pod IPs Tidal cannot reach directly (a local test cluster: kube-apiserver
refuses loopback addresses in EndpointSlices, so tests publish addresses from a documentation
range and map them to the loopback address their backend listens on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from scaler.kube.client import JSON, KubeClient
from scaler.kube.lazywatch import LazyWatches
from scaler.kube.paths import namespaced

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"


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
    counted: set[str] = set()  # pods already counted (a dual-stack Service lists each twice)
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
            uid = str((ep.get("targetRef") or {}).get("uid") or "")
            if uid:
                if uid in counted:
                    continue
                counted.add(uid)
            for address in ep.get("addresses") or []:
                host = f"[{address}]" if ":" in str(address) else str(address)
                out.append(f"{host}:{number}")
    return sorted(set(out))


class EndpointDirectory:
    """See the module docstring. Implements scaler.contract.EndpointSource."""

    def __init__(self, kube: KubeClient, address_map: Mapping[str, str] | None = None) -> None:
        self._watches = LazyWatches(kube)
        self._map = dict(address_map or {})

    async def endpoints(self, namespace: str, service: str, port: str) -> list[str]:
        slices = await self._watches.objects(
            (namespace, service),
            namespaced("discovery.k8s.io", "v1", "endpointslices", namespace),
            label_selector=f"{SERVICE_LABEL}={service}",
            keep=_keep,
            what=f"the EndpointSlices of Service {namespace}/{service}",
        )
        return [self._mapped(a) for a in slice_addresses(slices, port)]

    def _mapped(self, host_port: str) -> str:
        host, _, port = host_port.rpartition(":")
        bare = host.strip("[]")
        if bare in self._map:
            to = self._map[bare]
            return f"[{to}]:{port}" if ":" in to else f"{to}:{port}"
        return host_port

    async def aclose(self) -> None:
        await self._watches.aclose()
