"""A ScaledObject deleted while this replica may not write (a standby; a shard member in its
joining period) is finalized once it may: the skipped finalization is retried, not left to the
watch's next relist (up to 5 min, during which a namespace deletion hangs). Found in review."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scaler.finalizers import FINALIZER
from scaler.kube.paths import namespaced, scaled_objects
from scaler.settings import LeaderSettings, WatchSettings
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object


async def test_a_deletion_seen_while_standing_by_is_finalized_once_leading(
    cluster: Cluster, kubeconfig: Path
) -> None:
    ns = cluster.ns
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Another replica ("ghost") holds the Lease: this daemon starts as a standby and leads only
    # once the ghost's Lease has gone unrenewed for its duration on our clock.
    await cluster.kube.create(
        namespaced("coordination.k8s.io", "v1", "leases", ns),
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "tidal-leader"},
            "spec": {
                "holderIdentity": "ghost",
                "leaseDurationSeconds": 3,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        },
    )
    await cluster.create_deployment(deployment("w", replicas=0))
    body = scaled_object("w", "w", [{"type": "cron", "metadata": {
        "timezone": "Etc/UTC", "start": "0 3 * * *", "end": "0 4 * * *", "desiredReplicas": "1",
    }}])  # fmt: skip
    body["metadata"]["finalizers"] = [FINALIZER]  # as a previous leader left it
    await cluster.create_so(body)
    leader = LeaderSettings(
        namespace=ns, identity="me", lease_duration=3.0, renew_deadline=2.0, retry_period=0.5
    )
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_daemon(kubeconfig, watch=watch, leader=leader) as daemon:
        assert daemon.leader is not None
        assert not daemon.leader.is_leader
        await cluster.delete_so("w")  # seen by a standby: its finalizer is not ours to remove yet

        async def gone() -> bool:
            return await cluster.kube.get_or_none(scaled_objects(ns, "w")) is None

        await eventually(gone, bool, timeout=30, what="the object finalized and gone")
        assert daemon.leader.is_leader
