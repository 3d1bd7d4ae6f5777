"""`tidal run --http-interceptors ...` reconciles HTTPScaledObjects (scaler/daemon.py wires
scaler.http_objects): the add-on's walkthrough object gets its ScaledObject, which the same
daemon then runs; without the flag HTTPScaledObjects are left alone."""

from __future__ import annotations

import copy
from pathlib import Path

from scaler.settings import PollSettings, WatchSettings
from tests.e2e.harness import Cluster, eventually, running_daemon
from tests.e2e.test_http_objects import _hso_path, _so
from tests.http_examples import WALKTHROUGH

ADMIN = "tidal-interceptor-admin.tidal:9090"


async def test_the_daemon_reconciles_http_scaled_objects_when_given_interceptors(
    cluster: Cluster, kubeconfig: Path
) -> None:
    poll = PollSettings(http_timeout=2.0, http_interceptors=(ADMIN,))
    watch = WatchSettings(namespace=cluster.ns, cluster_object_namespace=cluster.ns)
    async with running_daemon(kubeconfig, watch=watch, poll=poll) as daemon:
        assert daemon.http_objects is not None
        name = WALKTHROUGH["metadata"]["name"]
        await cluster.kube.create(_hso_path(cluster.ns), copy.deepcopy(WALKTHROUGH))
        so = await eventually(lambda: _so(cluster, name), bool, what="the ScaledObject")
        assert so is not None
        assert so["spec"]["triggers"][0]["metadata"]["interceptors"] == ADMIN

        async def running() -> bool:
            return daemon.objects.get((cluster.ns, name)) is not None

        await eventually(running, bool, what="the daemon running it")


async def test_without_interceptors_http_scaled_objects_are_left_alone(
    cluster: Cluster, kubeconfig: Path
) -> None:
    watch = WatchSettings(namespace=cluster.ns, cluster_object_namespace=cluster.ns)
    async with running_daemon(kubeconfig, watch=watch) as daemon:
        assert daemon.http_objects is None
