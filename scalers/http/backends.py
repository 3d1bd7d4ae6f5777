"""Ready backend addresses of a Service, from EndpointSlices and/or ready Pods.

Two sources feed one index; each is optional and their addresses are merged:

* **EndpointSlices** (``discovery.k8s.io/v1``, label ``kubernetes.io/service-name``): what a
  cluster publishes; an endpoint counts unless ``conditions.ready`` is false. The port is the
  slice's port with the Service port's name.
* **Pods** of the Service's selector that are Ready, have a pod IP and are not terminating. The
  port is the Service port's ``targetPort`` (a number, or the name of a container port). This is
  the source that works where EndpointSlices cannot hold the pods' addresses (kube-apiserver
  refuses loopback IPs in them: local clusters whose fake pods have 127.x addresses); it also
  sees a pod the moment it turns Ready, before the endpointslice controller has written.

The index holds only what routing needs (reduced objects, see `reduce_*`), fed by the caller's
watches (`tidal intercept` runs them); `changed(namespace)` is called after every update so held
requests of that namespace look again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scalers.http.routes import ServiceRef

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
Address = tuple[str, int]
ObjKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    target: int | str | None  # targetPort: a number, a container port's name, or unset


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    selector: tuple[tuple[str, str], ...]
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True)
class PodInfo:
    labels: Mapping[str, str]
    ip: str
    ports: Mapping[str, int]  # container port name -> number


@dataclass(frozen=True, slots=True)
class SliceInfo:
    service: str
    addresses: tuple[str, ...]  # ready endpoints only
    ports: Mapping[str, int]  # port name ("" when unnamed) -> number


def _meta(obj: Mapping[str, Any]) -> tuple[ObjKey, Mapping[str, Any]]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", ""))), meta


def reduce_service(obj: Mapping[str, Any]) -> ServiceInfo:
    spec = obj.get("spec") or {}
    ports = []
    for p in spec.get("ports") or ():
        target = p.get("targetPort")
        ports.append(ServicePort(str(p.get("name") or ""), int(p.get("port") or 0), target))
    selector = tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items()))
    return ServiceInfo(selector, tuple(ports))


def reduce_pod(obj: Mapping[str, Any]) -> PodInfo | None:
    """The pod as a backend, or None when it is not one (not Ready, no IP, terminating)."""
    _, meta = _meta(obj)
    status = obj.get("status") or {}
    ip = status.get("podIP")
    if not ip or meta.get("deletionTimestamp"):
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    if not ready:
        return None
    ports: dict[str, int] = {}
    for container in (obj.get("spec") or {}).get("containers") or ():
        for p in container.get("ports") or ():
            if p.get("name") and p.get("containerPort"):
                ports[str(p["name"])] = int(p["containerPort"])
    return PodInfo(dict(meta.get("labels") or {}), str(ip), ports)


def reduce_slice(obj: Mapping[str, Any]) -> SliceInfo | None:
    _, meta = _meta(obj)
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service:
        return None
    addresses: list[str] = []
    for endpoint in obj.get("endpoints") or ():
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        addresses.extend(str(a) for a in endpoint.get("addresses") or ())
    ports = {
        str(p.get("name") or ""): int(p["port"]) for p in obj.get("ports") or () if p.get("port")
    }
    return SliceInfo(str(service), tuple(addresses), ports)


class BackendIndex:
    """Services, ready pods and endpoint slices by namespace; `addresses(ref)` answers routing."""

    def __init__(self, changed: Callable[[str], None] = lambda ns: None) -> None:
        self._changed = changed
        self._services: dict[ObjKey, ServiceInfo] = {}
        self._pods: dict[str, dict[str, PodInfo]] = {}  # namespace -> name -> pod
        self._slices: dict[ObjKey, dict[str, SliceInfo]] = {}  # (ns, service) -> slice -> info
        self._slice_owner: dict[ObjKey, ObjKey] = {}  # (ns, slice) -> (ns, service)
        self._cache: dict[ServiceRef, tuple[Address, ...]] = {}

    # -- updates from the watches ---------------------------------------------------------------

    def set_service(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        key, _ = _meta(obj)
        if deleted:
            self._services.pop(key, None)
        else:
            self._services[key] = reduce_service(obj)
        self._touch(key[0])

    def set_pod(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        (ns, name), _ = _meta(obj)
        pods = self._pods.setdefault(ns, {})
        info = None if deleted else reduce_pod(obj)
        if info is None:
            if pods.pop(name, None) is None:
                return  # was no backend, still is none: nothing changed for routing
        elif pods.get(name) == info:
            return
        else:
            pods[name] = info
        self._touch(ns)

    def set_slice(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        key, _ = _meta(obj)
        previous = self._slice_owner.pop(key, None)
        if previous is not None:
            self._slices.get(previous, {}).pop(key[1], None)
        info = None if deleted else reduce_slice(obj)
        if info is not None:
            owner = (key[0], info.service)
            self._slice_owner[key] = owner
            self._slices.setdefault(owner, {})[key[1]] = info
        self._touch(key[0])

    def _touch(self, ns: str) -> None:
        for ref in [r for r in self._cache if r.namespace == ns]:
            del self._cache[ref]
        self._changed(ns)

    # -- queries ----------------------------------------------------------------------------------

    def addresses(self, ref: ServiceRef) -> tuple[Address, ...]:
        """The ready (ip, port) backends of `ref`, both sources merged, in a stable order."""
        cached = self._cache.get(ref)
        if cached is not None:
            return cached
        found = sorted(set(self._from_slices(ref)) | set(self._from_pods(ref)))
        result = tuple(found)
        self._cache[ref] = result
        return result

    def _service_port(self, ref: ServiceRef) -> tuple[ServiceInfo, ServicePort] | None:
        service = self._services.get((ref.namespace, ref.name))
        if service is None:
            return None
        for port in service.ports:
            if (ref.port is not None and port.port == ref.port) or (
                ref.port_name is not None and port.name == ref.port_name
            ):
                return service, port
        return None

    def _from_slices(self, ref: ServiceRef) -> list[Address]:
        slices = self._slices.get((ref.namespace, ref.name))
        found = self._service_port(ref)
        if not slices or found is None:
            return []
        _, port = found
        out: list[Address] = []
        for info in slices.values():
            number = info.ports.get(port.name)
            if number is not None:
                out.extend((a, number) for a in info.addresses)
        return out

    def _from_pods(self, ref: ServiceRef) -> list[Address]:
        found = self._service_port(ref)
        if found is None:
            return []
        service, port = found
        if not service.selector:
            return []  # a Service without selector has hand-made endpoints only
        out: list[Address] = []
        for pod in self._pods.get(ref.namespace, {}).values():
            if all(pod.labels.get(k) == v for k, v in service.selector):
                number = _target_port(port, pod)
                if number is not None:
                    out.append((pod.ip, number))
        return out


def _target_port(port: ServicePort, pod: PodInfo) -> int | None:
    if port.target is None:
        return port.port
    if isinstance(port.target, int):
        return port.target
    if str(port.target).isdigit():
        return int(port.target)
    return pod.ports.get(str(port.target))
