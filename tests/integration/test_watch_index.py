"""The watch cache's secondary index (Watcher(index=...)) against the real apiserver: HPAs by
the workload they scale, kept right across create, retarget and delete — the ownership check
reads only the HPAs on its workload through it instead of scanning all of them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import pytest

from localenv.controlplane import ControlPlane
from scaler.admission import hpa_workload, keep_hpa
from scaler.kube.client import KubeClient
from scaler.kube.watch import Watcher

pytestmark = pytest.mark.kube


def _hpa(name: str, target: str) -> dict[str, object]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_hpas_indexed_by_workload_follow_create_retarget_and_delete(
    control_plane: ControlPlane,
) -> None:
    ns = f"t-idx-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))

    async def noop(kind: str, obj: object) -> None:
        return None

    hpas = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"
    watcher = Watcher(kube, hpas, noop, name="hpas", keep=keep_hpa, index=hpa_workload)
    task = asyncio.create_task(watcher.run())
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await watcher.synced.wait()

        def names(workload: str) -> set[str]:
            return {k[1] for k in watcher.indexed((ns, workload))}

        await kube.create(hpas, _hpa("orders.eu", "worker"))
        await kube.create(hpas, _hpa("other", "worker"))
        await kube.create(hpas, _hpa("third", "Billing"))
        await _until(lambda: names("worker") == {"orders.eu", "other"}, "two on worker")
        await _until(lambda: names("Billing") == {"third"}, "one on Billing")
        await kube.merge_patch(f"{hpas}/other", {"spec": {"scaleTargetRef": {"name": "Billing"}}})
        await _until(lambda: names("Billing") == {"third", "other"}, "other moved to Billing")
        assert names("worker") == {"orders.eu"}
        await kube.delete(f"{hpas}/orders.eu")
        await kube.delete(f"{hpas}/third")
        await _until(lambda: names("Billing") == {"other"}, "third gone")
        assert watcher.indexed((ns, "nothing")) == {}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.aclose()
