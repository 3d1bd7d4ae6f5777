"""Drive one corpus case end to end and record what happened, for the test to assert on.

A case runs as a task in the module's event loop, next to every other case, against one
Tidal (daemon + metrics API behind the real aggregator) and the session's control plane:

1. its source is prepared (empty), its manifest applied in a fresh namespace;
2. the ScaledObject turns Ready; its `status.externalMetricNames` and the HPA are read;
3. work arrives: Tidal scales 0 → 1, the real HPA controller reads the metric through
   kube-apiserver's aggregator (asking for the name in lower case) and scales 1 → N;
4. (full cycle) the work is done: the HPA scales N → 1, Tidal scales 1 → 0 after cooldown.

Waits are generous and fail with the object's and the HPA's conditions and warning Events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import scaled_objects
from tests.compat.corpus import Case
from tests.compat.kube import (
    Namespace,
    ReplicaHistory,
    apply,
    hpa_conditions,
    hpa_current_metric_names,
    hpa_spec_metric_names,
    render,
    wait_for,
)
from tests.compat.sources import Components

T = TypeVar("T")

READY_TIMEOUT = 90.0
SCALE_TIMEOUT = 150.0
CRON_CLOSE_TIMEOUT = 240.0  # the window closes up to 100 s after it opened


@dataclass
class Outcome:
    namespace: str
    values: dict[str, str]
    metric_names: dict[str, list[str]] = field(default_factory=dict)  # SO status
    hpa_spec_names: dict[str, list[str]] = field(default_factory=dict)
    replicas_before_work: int = -1
    hpa_at_peak: JSON = field(default_factory=dict)
    history: list[int] = field(default_factory=list)  # the driven workload's spec.replicas
    idle_history: dict[str, list[int]] = field(default_factory=dict)
    events: list[JSON] = field(default_factory=list)
    starts_active: bool = False  # cron: the window is open when the object is created
    seconds: float = 0.0


def hpa_name(so: str) -> str:
    return f"keda-hpa-{so}"


async def run_case(case: Case, kube: KubeClient, components: Components) -> Outcome:
    started = time.monotonic()
    name = f"compat-{uuid.uuid4().hex[:8]}"
    await kube.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    ns = Namespace(kube, name)
    source = case.source(components)
    history = ReplicaHistory(kube, name)
    try:
        await source.prepare()
        values = {"TestNamespace": name, **source.values}
        outcome = Outcome(namespace=name, values=values, starts_active=source.starts_active)
        docs = render(case.manifest, values)
        await history.start()
        await apply(kube, name, docs)

        def diagnose(so: str = case.scaled_object) -> Callable[[], Awaitable[str]]:
            return lambda: ns.diagnose(so, hpa_name(so))

        for so in case.keda_names:
            await wait_for(
                partial(ns.condition, so, "Ready"),
                lambda c: c is not None and c["status"] == "True",
                what=f"{so} Ready=True",
                timeout=READY_TIMEOUT,
                diagnose=diagnose(so),
            )
            body = await wait_for(
                partial(ns.scaled_object, so),
                lambda o: bool(o.get("status", {}).get("externalMetricNames")),
                what=f"{so} status.externalMetricNames",
                timeout=READY_TIMEOUT,
                diagnose=diagnose(so),
            )
            outcome.metric_names[so] = list(body["status"]["externalMetricNames"])
            hpa = await wait_for(
                partial(ns.hpa, hpa_name(so)),
                lambda h: h is not None,
                what=f"HPA {hpa_name(so)}",
                timeout=READY_TIMEOUT,
                diagnose=diagnose(so),
            )
            assert hpa is not None
            outcome.hpa_spec_names[so] = hpa_spec_metric_names(hpa)
        outcome.replicas_before_work = await ns.replicas(case.deployment)

        await source.fill()
        await wait_for(
            lambda: ns.replicas(case.deployment),
            lambda n: n == case.replicas,
            what=f"{case.deployment} 0 -> 1 -> {case.replicas} through the HPA",
            timeout=SCALE_TIMEOUT,
            diagnose=diagnose(),
        )
        peak = await wait_for(
            lambda: ns.hpa(hpa_name(case.scaled_object)),
            lambda h: (
                h is not None
                and hpa_conditions(h).get("ScalingActive", {}).get("status") == "True"
                and h["status"].get("desiredReplicas") == case.replicas
                and sorted(hpa_current_metric_names(h))
                == sorted(outcome.hpa_spec_names[case.scaled_object])
            ),
            what=f"HPA status at {case.replicas} replicas with every metric read",
            timeout=READY_TIMEOUT,
            diagnose=diagnose(),
        )
        assert peak is not None
        outcome.hpa_at_peak = peak
        # The watch and Tidal's Event trail the writes by a moment.
        await wait_for(
            _now(lambda: history.of(case.deployment)[-1:]),
            lambda last: last == [case.replicas],
            what=f"the watch to see {case.replicas} replicas",
            timeout=READY_TIMEOUT,
        )
        await _event(ns, case.scaled_object, "KEDAScaleTargetActivated")

        if case.full_cycle:
            await source.drain()
            await wait_for(
                lambda: ns.replicas(case.deployment),
                lambda n: n == 0,
                what=f"{case.deployment} {case.replicas} -> 1 -> 0 (HPA, then Tidal)",
                timeout=CRON_CLOSE_TIMEOUT if source.starts_active else SCALE_TIMEOUT,
                diagnose=diagnose(),
            )
            await wait_for(
                _now(lambda: history.of(case.deployment)[-1:]),
                lambda last: last == [0],
                what="the watch to see 0 replicas",
                timeout=READY_TIMEOUT,
            )
            await _event(ns, case.scaled_object, "KEDAScaleTargetDeactivated")
        outcome.history = history.of(case.deployment)
        outcome.idle_history = {d: history.of(d) for d in case.idle}
        outcome.events = await ns.events()
        outcome.seconds = time.monotonic() - started
        return outcome
    finally:
        await history.stop()
        await source.close()


async def delete_scaled_objects(kube: KubeClient, namespaces: list[str], timeout: float) -> None:
    """Delete every ScaledObject of the corpus while Tidal still runs (it owns the finalizer)."""
    for name in namespaces:
        listing = await kube.get(scaled_objects(name))
        for item in listing.get("items", []):
            await kube.delete(scaled_objects(name, item["metadata"]["name"]))

    async def remaining() -> int:
        count = 0
        for name in namespaces:
            count += len((await kube.get(scaled_objects(name))).get("items", []))
        return count

    await wait_for(remaining, lambda n: n == 0, what="ScaledObjects finalized", timeout=timeout)


async def _event(ns: Namespace, so: str, reason: str) -> None:
    await wait_for(
        ns.events,
        lambda events: any(
            e["reason"] == reason and e["involvedObject"].get("name") == so for e in events
        ),
        what=f"the {reason} Event of {so}",
        timeout=READY_TIMEOUT,
    )


def _now(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return fn()

    return probe
