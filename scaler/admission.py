"""KEDA's admission checks, done at reconcile (Tidal has no webhook yet): one workload, one
ScaledObject (the oldest keeps it), and no HPA of someone else's on it.

Pure: the caller passes the ScaledObjects it knows and the HPAs its watch keeps (reduced by
`keep_hpa`), so a webhook or an offline checker can run the same checks later. Passing only those
on the same workload name (the daemon's indexes: `ObjectTable.on_workload`, HPAs indexed by
`hpa_workload`) gives the same answer in O(matches) instead of O(objects).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scaler.kube.client import JSON
from scaler.kube.paths import GVKR
from scaler.objects import ScaledObject
from scaler.values import parse_group_version

HPA_OWNERSHIP_ANNOTATION = "validations.keda.sh/hpa-ownership"


def keep_hpa(obj: JSON) -> JSON:
    """What the daemon keeps of an HPA: enough for the ownership check and DELETED events."""
    meta = obj.get("metadata", {})
    ref = obj.get("spec", {}).get("scaleTargetRef", {})
    group: str | None
    try:
        group = parse_group_version(str(ref.get("apiVersion", "")))[0]
    except ValueError:
        group = None  # an apiVersion that does not parse matches no scale target
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": dict(meta.get("labels") or {}),
        },
        "target": (group, ref.get("kind"), ref.get("name")),
        "owners": [o.get("uid") for o in meta.get("ownerReferences") or []],
        "ownership_check": (meta.get("annotations") or {}).get(HPA_OWNERSHIP_ANNOTATION, ""),
    }


def hpa_workload(kept: JSON) -> tuple[str, str]:
    """The index of a kept HPA: (namespace, name of the workload it scales)."""
    return (str(kept["metadata"].get("namespace") or ""), str(kept["target"][2] or ""))


def ownership_problem(
    so: ScaledObject,
    target: GVKR,
    others: Iterable[ScaledObject],
    hpas: Mapping[tuple[str, str], JSON],
) -> str | None:
    """Why `so` may not scale its workload (KEDA's message), or None when it may."""
    ref = so.scale_target_ref
    what = f"the workload '{ref.name}' of type '{target.gvk_string}' is already managed by"
    mine = (so.creation_timestamp or 0.0, so.name)
    for o in others:
        if o.namespace != so.namespace or o.name == so.name:
            continue
        if o.scale_target_ref.name != ref.name or o.scale_target_ref.gvk != ref.gvk:
            continue
        if (o.creation_timestamp or 0.0, o.name) < mine:
            return f"{what} the ScaledObject '{o.name}'"
    for (ns, name), h in hpas.items():
        if ns != so.namespace or h["target"] != (target.group, target.kind, ref.name):
            continue
        if so.uid and so.uid in h["owners"]:
            continue
        if h["ownership_check"] == "false":
            continue  # validations.keda.sh/hpa-ownership: "false" on the HPA
        if so.flags.transfer_hpa_ownership and so.advanced.hpa.name == name:
            continue  # adopted: ensure_hpa rewrites it with our owner reference
        return f"{what} the hpa '{name}'"
    return None
