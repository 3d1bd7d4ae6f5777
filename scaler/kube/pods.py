"""How many pods a label selector matches, from a watch (the `kubernetes-workload` trigger).

`PodCounter.count(namespace, selector)` answers from a list-then-watch of the pods matching
`selector` in `namespace` ("" = every namespace), shared by every trigger asking the same
question and stopped once unused (scaler.kube.lazywatch): polls never LIST the API, unlike
KEDA's scaler, which pages through a LIST of the pods at every poll. Pods in phase Succeeded or
Failed are not counted, as KEDA does. It is handed to plugins through `ClientPool.pods`
(scaler.contract.PodSource).
"""

from __future__ import annotations

from scaler.kube.client import JSON, KubeClient
from scaler.kube.lazywatch import LazyWatches

TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})


def _keep(pod: JSON) -> JSON:
    meta = pod.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


class PodCounter:
    """See the module docstring. Implements scaler.contract.PodSource."""

    def __init__(self, kube: KubeClient) -> None:
        self._watches = LazyWatches(kube)

    async def count(self, namespace: str, selector: str) -> int:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        pods = await self._watches.objects(
            (namespace, selector),
            path,
            label_selector=selector,
            keep=_keep,
            what=f"the pods matching {selector!r} in {namespace or 'every namespace'}",
        )
        return sum(1 for p in pods if (p.get("status") or {}).get("phase") not in TERMINATED_PHASES)

    async def aclose(self) -> None:
        await self._watches.aclose()
