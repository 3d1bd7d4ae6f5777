"""Manifests applied as written, a replica-history recorder, and waits with diagnostics.

Manifests use the placeholders of KEDA's own e2e templates (`{{.TestNamespace}}`,
`{{.BootstrapServer}}`, …); only the namespace, the loopback addresses and credentials of the
local components and the cron minutes are filled in. An unknown placeholder is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import hpa, namespaced, scaled_objects

T = TypeVar("T")

MANIFESTS = Path(__file__).parent / "manifests"
_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")

# kind → (group, version, plural), in the order objects are created.
KINDS: dict[str, tuple[str, str, str]] = {
    "Secret": ("", "v1", "secrets"),
    "TriggerAuthentication": ("keda.sh", "v1alpha1", "triggerauthentications"),
    "Deployment": ("apps", "v1", "deployments"),
    "ScaledObject": ("keda.sh", "v1alpha1", "scaledobjects"),
}


def placeholders(name: str) -> set[str]:
    return set(_PLACEHOLDER.findall((MANIFESTS / name).read_text()))


def render(name: str, values: Mapping[str, str]) -> list[JSON]:
    """The manifest's documents with `{{.Key}}` replaced by `values[Key]`."""
    text = (MANIFESTS / name).read_text()
    missing = placeholders(name) - set(values)
    if missing:
        raise KeyError(f"{name}: no value for {sorted(missing)}")
    rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        if doc["kind"] not in KINDS:
            raise ValueError(f"{name}: kind {doc['kind']} is not applied by the corpus")
    return docs


def of_kind(docs: list[JSON], kind: str) -> list[JSON]:
    return [d for d in docs if d["kind"] == kind]


async def apply(kube: KubeClient, namespace: str, docs: list[JSON]) -> None:
    """Create every document in `namespace`, Secrets first, ScaledObjects last."""
    order = list(KINDS)
    for doc in sorted(docs, key=lambda d: order.index(d["kind"])):
        group, version, plural = KINDS[doc["kind"]]
        assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
        await kube.create(namespaced(group, version, plural, namespace), doc)


class ReplicaHistory:
    """Every `spec.replicas` a namespace's Deployments go through, from a watch.

    A watch sees each write (Tidal's 0 → 1, the HPA's 1 → N), so a short step between two
    polls is never missed.
    """

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.path = namespaced("apps", "v1", "deployments", namespace)
        self.seen: dict[str, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def _record(self, obj: JSON) -> None:
        replicas = int(obj.get("spec", {}).get("replicas", 0))
        steps = self.seen.setdefault(obj["metadata"]["name"], [])
        if not steps or steps[-1] != replicas:
            steps.append(replicas)

    async def _list(self) -> str:
        listing = await self.kube.get(self.path)
        for item in listing.get("items", []):
            self._record(item)
        return str(listing["metadata"]["resourceVersion"])

    async def start(self) -> None:
        rv = await self._list()
        self._task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        while True:
            try:
                query: dict[str, str | int] = {
                    "watch": 1,
                    "resourceVersion": rv,
                    "timeoutSeconds": 60,
                }
                async for event in self.kube.watch_lines(self.path, query, timeout=90):
                    obj = event.get("object", {})
                    if event.get("type") == "ERROR":
                        rv = await self._list()
                        break
                    rv = str(obj["metadata"]["resourceVersion"])
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._record(obj)
            except KubeError:
                await asyncio.sleep(0.2)
                rv = await self._list()

    def of(self, name: str) -> list[int]:
        return list(self.seen.get(name, []))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    diagnose: Callable[[], Awaitable[str]] | None = None,
) -> T:
    """Poll `probe` until `check(value)`; on timeout fail with the last value and diagnostics."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await probe()
        if check(last):
            return last
        if loop.time() > deadline:
            extra = f"\n{await diagnose()}" if diagnose is not None else ""
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{extra}"
            )
        await asyncio.sleep(0.25)


class Namespace:
    """Reads of one namespace's Deployments, ScaledObjects, HPAs and Events."""

    def __init__(self, kube: KubeClient, name: str) -> None:
        self.kube = kube
        self.name = name

    async def replicas(self, deployment: str) -> int:
        body = await self.kube.get(namespaced("apps", "v1", "deployments", self.name, deployment))
        return int(body["spec"].get("replicas", 0))

    async def scaled_object(self, name: str) -> JSON:
        return await self.kube.get(scaled_objects(self.name, name))

    async def condition(self, so: str, type_: str) -> JSON | None:
        body = await self.scaled_object(so)
        for cond in body.get("status", {}).get("conditions", []):
            if cond.get("type") == type_:
                return dict(cond)
        return None

    async def hpa(self, name: str) -> JSON | None:
        return await self.kube.get_or_none(hpa(self.name, name))

    async def events(self) -> list[JSON]:
        body = await self.kube.get(namespaced("", "v1", "events", self.name))
        return list(body.get("items", []))

    async def diagnose(self, so: str, hpa_name: str) -> str:
        """What a failed wait shows: the object's conditions, the HPA's, warning Events."""
        lines = []
        with contextlib.suppress(KubeError):
            body = await self.scaled_object(so)
            status = body.get("status", {})
            lines.append(
                f"  ScaledObject {so} externalMetricNames: {status.get('externalMetricNames')}"
            )
            lines += [f"  ScaledObject {_condition(c)}" for c in status.get("conditions", [])]
        with contextlib.suppress(KubeError):
            h = await self.hpa(hpa_name)
            if h is None:
                lines.append(f"  HPA {hpa_name}: missing")
            else:
                st = h.get("status", {})
                lines.append(
                    f"  HPA {hpa_name}: current {st.get('currentReplicas')} desired "
                    f"{st.get('desiredReplicas')} metrics {st.get('currentMetrics')}"
                )
                lines += [f"  HPA {_condition(c)}" for c in st.get("conditions", [])]
        with contextlib.suppress(KubeError):
            warnings = [e for e in await self.events() if e.get("type") == "Warning"]
            lines += [
                f"  Event {e.get('reason')} on {e['involvedObject'].get('name')}: "
                f"{e.get('message', '')[:300]}"
                for e in warnings[-5:]
            ]
        return "\n".join(lines)


def _condition(cond: Mapping[str, Any]) -> str:
    return (
        f"{cond.get('type')}={cond.get('status')} {cond.get('reason', '')}: "
        f"{str(cond.get('message', ''))[:300]}"
    )


def hpa_conditions(body: JSON) -> dict[str, JSON]:
    return {c["type"]: c for c in body.get("status", {}).get("conditions", [])}


def hpa_spec_metric_names(body: JSON) -> list[str]:
    return [
        m["external"]["metric"]["name"] for m in body["spec"]["metrics"] if m["type"] == "External"
    ]


def hpa_current_metric_names(body: JSON) -> list[str]:
    return [
        m["external"]["metric"]["name"]
        for m in body.get("status", {}).get("currentMetrics") or []
        if m.get("type") == "External"
    ]
