"""HTTPScaledObjects from the KEDA HTTP add-on's docs apply unchanged; Tidal owns their
ScaledObjects (scaler/http_objects.py against the real kube-apiserver and garbage collector)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from scaler.http_objects import HttpObjects
from scaler.kube.client import JSON
from tests.e2e.harness import Cluster, eventually
from tests.e2e.http_helpers import HSO_API
from tests.http_examples import ADDON_DOC_EXAMPLE, WALKTHROUGH


def _hso_path(ns: str, name: str = "") -> str:
    return f"{HSO_API}/namespaces/{ns}/httpscaledobjects" + (f"/{name}" if name else "")


@pytest.fixture
async def reconciler(cluster: Cluster) -> AsyncIterator[Callable[[bool], None]]:
    """HttpObjects for the test's namespace; the returned setter flips `may_write`."""
    leader = {"on": True}
    objects = HttpObjects(
        cluster.kube,
        lambda: leader["on"],
        interceptors=["tidal-interceptor-admin.tidal:9090"],
        namespace=cluster.ns,
        resync=1,
    )
    task = asyncio.create_task(objects.run())
    yield lambda on: leader.__setitem__("on", on)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _so(cluster: Cluster, name: str) -> JSON | None:
    return await cluster.kube.get_or_none(
        f"/apis/keda.sh/v1alpha1/namespaces/{cluster.ns}/scaledobjects/{name}"
    )


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        pytest.param(
            ADDON_DOC_EXAMPLE,
            {"min": 5, "max": 10, "cooldown": 300, "metric": "requestRate", "target": "100"},
            id="reference-doc",
        ),
        pytest.param(
            WALKTHROUGH,
            {"min": 0, "max": 10, "cooldown": 1, "metric": "concurrency", "target": "1"},
            id="walkthrough",
        ),
    ],
)
async def test_addon_examples_apply_unchanged_and_get_an_owned_scaled_object(
    cluster: Cluster,
    reconciler: Callable[[bool], None],
    example: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    name = example["metadata"]["name"]
    created = await cluster.kube.create(_hso_path(cluster.ns), copy.deepcopy(example))
    assert created["spec"]["hosts"] == example["spec"]["hosts"]  # nothing pruned
    so = await eventually(lambda: _so(cluster, name), bool, what="the ScaledObject")
    assert so is not None
    spec = so["spec"]
    got = {
        "min": spec["minReplicaCount"],
        "max": spec["maxReplicaCount"],
        "cooldown": spec["cooldownPeriod"],
        "metric": spec["triggers"][0]["metadata"]["metric"],
        "target": spec["triggers"][0]["metadata"]["targetValue"],
    }
    assert got == expected
    assert spec["triggers"][0]["type"] == "http"
    (owner,) = so["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("HTTPScaledObject", created["metadata"]["uid"])
    hso = await eventually(
        lambda: cluster.kube.get(_hso_path(cluster.ns, name)),
        lambda h: bool((h.get("status") or {}).get("conditions")),
        what="HTTPScaledObject status",
    )
    assert hso["status"]["conditions"][0]["status"] == "True"
    assert hso["status"]["targetWorkload"] == f"apps/v1/Deployment/{name}"
    # Deleting the HTTPScaledObject takes its ScaledObject with it (the garbage collector).
    await cluster.kube.delete(_hso_path(cluster.ns, name))
    await eventually(lambda: _so(cluster, name), lambda s: s is None, what="ScaledObject gone")


async def test_the_skip_annotation_removes_the_scaled_object_and_a_standby_writes_nothing(
    cluster: Cluster, reconciler: Callable[[bool], None]
) -> None:
    await cluster.kube.create(_hso_path(cluster.ns), copy.deepcopy(WALKTHROUGH))
    await eventually(lambda: _so(cluster, "app-1"), bool, what="the ScaledObject")
    skip = {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    await cluster.kube.merge_patch(
        _hso_path(cluster.ns, "app-1"), {"metadata": {"annotations": skip}}
    )
    await eventually(lambda: _so(cluster, "app-1"), lambda s: s is None, what="removed")
    reconciler(False)  # no longer leader: the annotation's removal must not be acted on
    await cluster.kube.merge_patch(
        _hso_path(cluster.ns, "app-1"), {"metadata": {"annotations": {next(iter(skip)): None}}}
    )
    await asyncio.sleep(2.5)  # two resyncs
    assert await _so(cluster, "app-1") is None
    reconciler(True)
    await eventually(lambda: _so(cluster, "app-1"), bool, what="recreated by the leader")
