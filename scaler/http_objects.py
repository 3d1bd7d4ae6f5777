"""HTTPScaledObjects -> the ScaledObjects (and through them the HPAs) that scale their workloads.

For every ``http.keda.sh/v1alpha1`` HTTPScaledObject, Tidal server-side applies a ScaledObject of
the same name and namespace, owned by it (``ownerReferences`` with ``controller: true``: the
garbage collector deletes the ScaledObject, and the daemon its HPA, when the HTTPScaledObject
goes), with one ``http`` trigger (scalers/http/scaler.py) reading the interceptors' push
streams. The mapping follows the KEDA HTTP add-on: ``replicas.min``/``max`` (default 0/100) ->
``minReplicaCount``/``maxReplicaCount``; ``scaledownPeriod`` (default 300) -> ``cooldownPeriod``;
``initialCooldownPeriod`` as is; ``scalingMetric.concurrency`` or ``.requestRate`` (default:
concurrency 100; the deprecated ``targetPendingRequests`` is the concurrency target) -> the
trigger's metric. The annotation ``httpscaledobject.keda.sh/skip-scaledobject-creation: "true"``
removes (and keeps away) the ScaledObject Tidal created: routing still works, and a hand-written
ScaledObject may use the ``http`` trigger directly.

Status: ``status.targetWorkload``, ``status.targetService`` and a ``Ready`` condition, written
only when they change. Only a replica for which `may_write()` is true writes (the daemon passes
its leadership check); a replica that becomes leader catches up at the next resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scaler.errors import KubeError, NotLeaderError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import scaled_objects
from scaler.kube.watch import Watcher

log = logging.getLogger(__name__)

GROUP_VERSION = "http.keda.sh/v1alpha1"
HSO_COLLECTION = "/apis/http.keda.sh/v1alpha1"
SKIP_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
FIELD_MANAGER = "tidal-http"
OWNER_LABEL = "http.tidal.sh/httpscaledobject"
TRIGGER_TYPE = "http"
POLLING_INTERVAL = 5  # s; requests wake the object at once, polling only notices quiet


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def scaled_object_for(
    hso: Mapping[str, Any], interceptors: Sequence[str]
) -> tuple[JSON, list[str]]:
    """The ScaledObject for `hso` and the problems that keep it from being applied."""
    meta = hso.get("metadata") or {}
    spec = hso.get("spec") or {}
    name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))
    ref = spec.get("scaleTargetRef") or {}
    problems = []
    if not ref.get("name"):
        problems.append("spec.scaleTargetRef.name (the workload to scale) is required")
    if not ref.get("service"):
        problems.append("spec.scaleTargetRef.service is required")
    replicas = spec.get("replicas") or {}
    metric = spec.get("scalingMetric") or {}
    metadata: dict[str, str] = {
        "interceptors": ",".join(interceptors),
        "httpScaledObject": name,
    }
    if metric.get("requestRate") is not None and metric.get("concurrency") is not None:
        problems.append("spec.scalingMetric: requestRate and concurrency are mutually exclusive")
    rate = metric.get("requestRate")
    if rate is not None:
        metadata["metric"] = "requestRate"
        metadata["targetValue"] = str(_int(rate.get("targetValue"), 100))
        metadata["window"] = str(rate.get("window") or "1m")
        metadata["granularity"] = str(rate.get("granularity") or "1s")
    else:
        target = (metric.get("concurrency") or {}).get("targetValue")
        legacy = spec.get("targetPendingRequests")
        metadata["metric"] = "concurrency"
        metadata["targetValue"] = str(_int(target, _int(legacy, 100)))
    so_spec: JSON = {
        "scaleTargetRef": {k: ref[k] for k in ("name", "kind", "apiVersion") if ref.get(k)},
        "minReplicaCount": _int(replicas.get("min"), 0),
        "maxReplicaCount": _int(replicas.get("max"), 100),
        "cooldownPeriod": _int(spec.get("scaledownPeriod"), 300),
        "pollingInterval": POLLING_INTERVAL,
        "triggers": [{"type": TRIGGER_TYPE, "name": "http", "metadata": metadata}],
    }
    if spec.get("initialCooldownPeriod") is not None:
        so_spec["initialCooldownPeriod"] = _int(spec.get("initialCooldownPeriod"), 0)
    so: JSON = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": {OWNER_LABEL: name, "app.kubernetes.io/managed-by": "tidal"},
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "HTTPScaledObject",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": so_spec,
    }
    return so, problems


def _status_for(hso: Mapping[str, Any], problems: Sequence[str], error: str = "") -> JSON:
    spec = hso.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    kind = ref.get("kind") or "Deployment"
    api_version = ref.get("apiVersion") or "apps/v1"
    port = ref.get("port") if ref.get("port") is not None else ref.get("portName", "")
    ok = not problems and not error
    if ok:
        reason, message = "ScaledObjectApplied", "ScaledObject applied; the interceptors route"
    elif problems:
        reason, message = "InvalidSpec", "; ".join(problems)
    else:
        reason, message = "ApplyFailed", error
    return {
        "targetWorkload": f"{api_version}/{kind}/{ref.get('name', '')}",
        "targetService": f"{ref.get('service', '')}:{port}",
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ok else "False",
                "reason": reason,
                "message": message,
                "observedGeneration": (hso.get("metadata") or {}).get("generation", 0),
            }
        ],
    }


def _same_status(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    def strip(status: Mapping[str, Any]) -> Any:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or ()
        ]
        return {**status, "conditions": conditions}

    return bool(strip(current) == strip(desired))


class HttpObjects:
    """Watches HTTPScaledObjects and applies their ScaledObjects while `may_write()`."""

    def __init__(
        self,
        kube: KubeClient,
        may_write: Callable[[], bool],
        *,
        interceptors: Sequence[str],
        namespace: str = "",
        resync: float = 30.0,
    ) -> None:
        self._kube = kube
        self._may_write = may_write
        self._interceptors = tuple(interceptors)
        self._namespace = namespace
        self._resync = resync
        # key -> (uid, generation, skip annotation) last reconciled
        self._done: dict[tuple[str, str], tuple[str, int, str]] = {}
        path = (
            f"{HSO_COLLECTION}/namespaces/{namespace}/httpscaledobjects"
            if namespace
            else f"{HSO_COLLECTION}/httpscaledobjects"
        )
        self.watcher = Watcher(kube, path, self._on_event, name="httpscaledobjects")

    async def run(self) -> None:
        """Until cancelled: the watch, and a resync of every object every `resync` seconds."""
        watch = asyncio.create_task(self.watcher.run(), name="watch-httpscaledobjects")
        try:
            while True:
                await asyncio.sleep(self._resync)
                for obj in list(self.watcher.objects.values()):
                    await self._reconcile(obj)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _on_event(self, kind: str, obj: JSON) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "DELETED":
            self._done.pop(key, None)  # the garbage collector removes the ScaledObject
            return
        await self._reconcile(obj)

    async def _reconcile(self, obj: JSON) -> None:
        if not self._may_write():
            return
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        skip = str((meta.get("annotations") or {}).get(SKIP_ANNOTATION, ""))
        stamp = (str(meta.get("uid", "")), int(meta.get("generation") or 0), skip)
        if self._done.get((ns, name)) == stamp:
            return
        try:
            problems = await self._apply(obj, ns, name)
            await self._write_status(obj, ns, name, problems)
            self._done[(ns, name)] = stamp
        except NotLeaderError:
            return
        except KubeError as exc:
            log.warning(
                "HTTPScaledObject not reconciled",
                extra={"object": f"{ns}/{name}", "error": str(exc)},
            )
            with contextlib.suppress(KubeError):
                await self._write_status(obj, ns, name, [], str(exc))

    async def _apply(self, obj: JSON, ns: str, name: str) -> list[str]:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true":
            await self._delete_owned(obj, ns, name)
            return []
        so, problems = scaled_object_for(obj, self._interceptors)
        if problems:
            return problems
        started = time.monotonic()
        await self._kube.request(
            "PATCH",
            scaled_objects(ns, name),
            body=so,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        log.info(
            "ScaledObject applied for HTTPScaledObject",
            extra={"object": f"{ns}/{name}", "ms": round((time.monotonic() - started) * 1000, 1)},
        )
        return []

    async def _delete_owned(self, obj: JSON, ns: str, name: str) -> None:
        current = await self._kube.get_or_none(scaled_objects(ns, name))
        uid = (obj.get("metadata") or {}).get("uid")
        owners = ((current or {}).get("metadata") or {}).get("ownerReferences") or []
        if current is not None and any(o.get("uid") == uid for o in owners):
            await self._kube.delete(scaled_objects(ns, name))

    async def _write_status(
        self, obj: JSON, ns: str, name: str, problems: Sequence[str], error: str = ""
    ) -> None:
        desired = _status_for(obj, problems, error)
        if _same_status(obj.get("status") or {}, desired):
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for condition in desired["conditions"]:
            condition["lastTransitionTime"] = now
        await self._kube.merge_patch(
            f"{HSO_COLLECTION}/namespaces/{ns}/httpscaledobjects/{name}/status",
            {"status": desired},
        )
