"""The admission webhook's checks (metrics_api.admission's `Validator`), over the daemon's own
state: scaler.validation with what the daemon's watches hold, read only.

* the other ScaledObjects are the ones the daemon runs (its table), so "one ScaledObject per
  workload, the oldest keeps it" is decided on exactly what the daemon decides it on;
* the HPAs, (Cluster)TriggerAuthentications and the Deployments/StatefulSets (their containers'
  env and cpu/memory requests) come from the watch caches;
* LimitRanges are listed (one GET) only when a container lacks a cpu/memory request; when they
  can't be read, nothing is refused on that account.

Secrets and ConfigMaps are never read here: values from them are unseen (scaler.trigger_check).
Until the watches have synced the cross-object rules are skipped, with a warning in the answer.
Objects outside the watched namespace are not Tidal's: they are allowed unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from metrics_api.admission import AdmissionRequest, Verdict
from scaler.daemon import Daemon
from scaler.errors import KubeError
from scaler.kube.paths import namespaced
from scaler.validation import (
    Known,
    Problem,
    check_scaled_object,
    check_trigger_auth,
    limit_range_defaults,
)

log = logging.getLogger(__name__)

NOT_SYNCED = "Tidal has not synced its watches yet: the checks against other objects were skipped"


class DaemonValidator:
    def __init__(self, daemon: Daemon, registry: CollectorRegistry | None = None) -> None:
        self._daemon = daemon
        self.reviews = Counter(
            "tidal_webhook_reviews_total",
            "Admission reviews answered, by kind and whether the object was allowed",
            ["kind", "allowed"],
            registry=registry,
        )

    async def review(self, request: AdmissionRequest) -> Verdict:
        verdict = await self._review(request)
        self.reviews.labels(request.kind, str(verdict.allowed).lower()).inc()
        if not verdict.allowed:
            log.info(
                "admission denied",
                extra={
                    "kind": request.kind,
                    "object": f"{request.namespace}/{request.name}",
                    "operation": request.operation,
                    "reason": verdict.message,
                },
            )
        return verdict

    async def _review(self, request: AdmissionRequest) -> Verdict:
        if request.operation not in ("CREATE", "UPDATE") or _removing_finalizer(request):
            return Verdict(True)
        watched = self._daemon.settings.watch.namespace
        if request.kind != "ClusterTriggerAuthentication" and watched not in (
            "",
            request.namespace,
        ):
            return Verdict(True)
        raw = _with_namespace(request.object, request.namespace)
        if request.kind == "ScaledObject":
            synced = self._daemon.ready()
            problems = await check_scaled_object(raw, self._known(synced))
            warnings = () if synced else (NOT_SYNCED,)
        else:
            problems = await check_trigger_auth(raw, self._known(True))
            warnings = ()
        if not problems:
            return Verdict(True, warnings=warnings)
        return Verdict(False, message=denial(problems), warnings=warnings)

    def _known(self, synced: bool) -> Known:
        d = self._daemon
        inputs = d.inputs

        def auth_spec(kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
            if kind == "ClusterTriggerAuthentication":
                obj = inputs.cluster_trigger_auths.objects.get(("", name))
            else:
                obj = inputs.trigger_auths.objects.get((namespace, name))
            spec = None if obj is None else obj.get("spec")
            return spec if isinstance(spec, Mapping) else ({} if obj is not None else None)

        def workload(
            group: str, kind: str, namespace: str, name: str
        ) -> Sequence[Mapping[str, Any]] | None:
            resource = {"Deployment": "deployments", "StatefulSet": "statefulsets"}.get(kind)
            watcher = d.targets.watchers.get((group, resource or ""))
            if watcher is None or not watcher.synced.is_set():
                return None
            obj = watcher.objects.get((namespace, name))
            return None if obj is None else list(obj["containers"])

        return Known(
            scaled_objects=[rt.so for rt in d.objects.runtimes()] if synced else (),
            hpas=inputs.foreign_hpas() if synced else {},
            auth_spec=auth_spec,
            workload=workload,
            limit_defaults=self._limit_defaults,
            cluster_namespace=d.settings.watch.cluster_object_namespace,
            timeout=d.settings.poll.http_timeout,
        )

    async def _limit_defaults(self, namespace: str) -> frozenset[str] | None:
        try:
            body = await self._daemon.kube.get(namespaced("", "v1", "limitranges", namespace))
        except KubeError as exc:
            log.warning(
                "limit ranges not readable: cpu/memory requests not checked",
                extra={"namespace": namespace, "error": str(exc)},
            )
            return None
        return limit_range_defaults(body.get("items") or [])


def denial(problems: Sequence[Problem]) -> str:
    """The message kubectl shows: every problem, with its field."""
    return "; ".join(str(p) for p in problems)


def _with_namespace(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    if namespace and not meta.get("namespace"):
        meta["namespace"] = namespace
    return {**obj, "metadata": meta}


def _removing_finalizer(request: AdmissionRequest) -> bool:
    """KEDA's isRemovingFinalizer: an update that only drops finalizers is never refused (the
    object is being deleted)."""
    old = request.old_object
    if request.operation != "UPDATE" or old is None:
        return False
    fewer = len(request.object.get("metadata", {}).get("finalizers") or []) < len(
        old.get("metadata", {}).get("finalizers") or []
    )
    return fewer and request.object.get("spec") == old.get("spec")
