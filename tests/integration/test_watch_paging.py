"""A watch's (re)list against the real apiserver, read in pages (`limit` + `continue`) as
client-go's reflector does: a cluster's thousands of Deployments or ScaledObjects are never one
response decoded in one piece on the event loop, and what was deleted between two lists is still
found and reported across page boundaries (before what is new, as an unpaged relist did).

The namespaces hold only the test's ConfigMaps: the local controller manager does not run the
root-ca-cert-publisher that would add kube-root-ca.crt to each."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from localenv.controlplane import ControlPlane
from scaler.kube.client import JSON, KubeClient
from scaler.kube.watch import Watcher, object_key

pytestmark = pytest.mark.kube

OBJECTS = 25
PAGE = 10


def _config_map(name: str) -> JSON:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


async def test_a_relist_reads_pages_and_reports_what_went_away_across_them(
    control_plane: ControlPlane,
) -> None:
    ns = f"t-page-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    events: list[tuple[str, str]] = []

    async def record(kind: str, obj: JSON) -> None:
        events.append((kind, object_key(obj)[1]))

    path = f"/api/v1/namespaces/{ns}/configmaps"
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        # Dotted names, as users pick them (ConfigMap names are DNS subdomains: no capitals).
        names = [f"cm-{i:02d}.orders" for i in range(OBJECTS)]
        await asyncio.gather(*(kube.create(path, _config_map(n)) for n in names))
        watcher = Watcher(kube, path, record, name="configmaps", page_size=PAGE)

        rv = await watcher._list()
        assert watcher.list_pages == 3  # 10 + 10 + 5 (one request per page)
        assert sorted(k[1] for k in watcher.objects) == sorted(names)
        assert sorted(events) == sorted(("ADDED", n) for n in names)
        assert rv  # the list's resourceVersion, where the watch resumes

        gone = names[3:24:5]  # one from each page, the last page included
        for n in gone:
            await kube.delete(f"{path}/{n}")
        await kube.create(path, _config_map("late.arrival"))
        events.clear()
        await watcher._list()
        assert watcher.list_pages == 3 + 3
        # As an unpaged relist did: what went away first, then what is new.
        assert sorted(events[: len(gone)]) == [("DELETED", n) for n in sorted(gone)]
        assert events[len(gone) :] == [("ADDED", "late.arrival")]
        assert sorted(k[1] for k in watcher.objects) == sorted(
            [n for n in names if n not in gone] + ["late.arrival"]
        )
    finally:
        with contextlib.suppress(Exception):
            await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.aclose()


async def test_a_running_watch_syncs_from_pages_then_follows_changes(
    control_plane: ControlPlane,
) -> None:
    ns = f"t-page-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))

    arrived = asyncio.Event()

    async def note_arrival(kind: str, obj: JSON) -> None:
        if object_key(obj)[1] == "after.sync":
            arrived.set()

    path = f"/api/v1/namespaces/{ns}/configmaps"
    task: asyncio.Task[None] | None = None
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await asyncio.gather(*(kube.create(path, _config_map(f"a{i}")) for i in range(OBJECTS)))
        watcher = Watcher(kube, path, note_arrival, name="configmaps", page_size=PAGE)
        task = asyncio.create_task(watcher.run())
        async with asyncio.timeout(20):
            await watcher.synced.wait()
        assert len(watcher.objects) == OBJECTS
        assert watcher.list_pages == 3
        await kube.create(path, _config_map("after.sync"))
        async with asyncio.timeout(20):
            await arrived.wait()
        assert (ns, "after.sync") in watcher.objects
        assert watcher.relists == 1  # followed by the watch, not by listing again
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.aclose()
