"""The autoscaling/v2 HorizontalPodAutoscaler Tidal keeps for each ScaledObject."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaler.contract import MetricSpec
from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import GVKR, hpa
from scaler.objects import SO_NAME_LABEL
from scaler.values import milli_quantity

MANAGED_BY = "tidal"


@dataclass(frozen=True, slots=True)
class HpaRequest:
    """Everything the desired HPA is derived from."""

    name: str
    namespace: str
    so_name: str
    so_uid: str
    target: GVKR
    target_name: str
    min_replicas: int
    max_replicas: int
    metrics: Sequence[MetricSpec]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    behavior: Mapping[str, Any] | None = None
    pause_scale_in: bool = False
    pause_scale_out: bool = False


def _target(spec: MetricSpec) -> JSON:
    if spec.target_type == "Utilization":
        return {"type": "Utilization", "averageUtilization": int(spec.target)}
    quantity = milli_quantity(spec.target)  # KEDA's GetMetricTargetMili
    if spec.target_type == "Value":
        return {"type": "Value", "value": quantity}
    return {"type": "AverageValue", "averageValue": quantity}


def metric_entry(spec: MetricSpec, so_name: str) -> JSON:
    if spec.kind == "External":
        return {
            "type": "External",
            "external": {
                "metric": {
                    "name": spec.name,
                    "selector": {"matchLabels": {SO_NAME_LABEL: so_name}},
                },
                "target": _target(spec),
            },
        }
    if spec.kind == "ContainerResource":
        return {
            "type": "ContainerResource",
            "containerResource": {
                "name": spec.name,
                "container": spec.container or "",
                "target": _target(spec),
            },
        }
    return {"type": "Resource", "resource": {"name": spec.name, "target": _target(spec)}}


def desired_hpa(req: HpaRequest) -> JSON:
    """The HPA as Tidal wants it. Metrics sorted by type for stable output (KEDA #1531)."""
    labels = {
        **req.labels,
        "app.kubernetes.io/name": req.name[:63],
        "app.kubernetes.io/part-of": req.so_name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SO_NAME_LABEL: req.so_name,
    }
    metrics = sorted(
        (metric_entry(m, req.so_name) for m in req.metrics), key=lambda m: str(m["type"])
    )
    spec: JSON = {
        "scaleTargetRef": {
            "apiVersion": req.target.api_version,
            "kind": req.target.kind,
            "name": req.target_name,
        },
        "minReplicas": req.min_replicas,
        "maxReplicas": req.max_replicas,
        "metrics": metrics,
    }
    behavior: JSON = copy.deepcopy(dict(req.behavior)) if req.behavior else {}
    if req.pause_scale_in:
        behavior.setdefault("scaleDown", {})["selectPolicy"] = "Disabled"
    if req.pause_scale_out:
        behavior.setdefault("scaleUp", {})["selectPolicy"] = "Disabled"
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": req.name,
            "namespace": req.namespace,
            "labels": labels,
            "annotations": dict(req.annotations),
            "ownerReferences": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": req.so_name,
                    "uid": req.so_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _subset(want: Any, have: Any) -> bool:
    """True when every field of `want` is present and equal in `have` (server adds defaults)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    return bool(want == have)


def hpa_drifted(desired: JSON, actual: JSON) -> bool:
    """Whether the live HPA differs from the desired one in anything Tidal manages."""
    dm, am = desired["metadata"], actual.get("metadata", {})
    if not _subset(dm["labels"], am.get("labels", {})):
        return True
    if not _subset(dm["annotations"], am.get("annotations", {})):
        return True
    if not _subset(dm["ownerReferences"], am.get("ownerReferences", [])):
        return True
    spec, live = desired["spec"], actual.get("spec", {})
    if "behavior" not in spec and live.get("behavior"):
        return True  # a behavior someone added by hand
    return not _subset(spec, live)


async def ensure_hpa(
    kube: KubeClient, req: HpaRequest, *, absent: bool = False
) -> tuple[str, JSON]:
    """Create or repair the HPA; returns ("created" | "updated" | "unchanged", live object).
    `absent`: the caller's watch holds no HPA of this name, so it is created without a read
    first (one request, not two, for every new object); one that exists anyway (409) is read
    and compared as usual."""
    desired = desired_hpa(req)
    path = hpa(req.namespace, req.name)
    if absent:
        try:
            return "created", await kube.create(hpa(req.namespace), desired)
        except KubeError as exc:
            if exc.status != 409:
                raise
    live = await kube.get_or_none(path)
    if live is None:
        return "created", await kube.create(hpa(req.namespace), desired)
    if not hpa_drifted(desired, live):
        return "unchanged", live
    desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    return "updated", await kube.replace(path, desired)


async def delete_hpa(kube: KubeClient, namespace: str, name: str) -> None:
    await kube.delete(hpa(namespace, name))
