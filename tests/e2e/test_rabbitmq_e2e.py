"""A `rabbitmq` ScaledObject on the real control plane: the daemon reads a real broker's queue
(host and credentials from a Secret through a TriggerAuthentication) and scales a Deployment
0 -> 1 when messages arrive; the HPA carries KEDA's metric name and target."""

from __future__ import annotations

import asyncio
from pathlib import Path

from localenv.pytest_rabbitmq import RabbitVhost
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object
from tests.integration.test_scaler_rabbitmq import amqp_host


async def test_rabbitmq_queue_scales_a_deployment_from_zero(
    cluster: Cluster, kubeconfig: Path, rabbitmq_vhost: RabbitVhost
) -> None:
    v = rabbitmq_vhost
    v.server.declare_queue("orders", v.name)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_secret_auth("rabbit-auth", "host", "rabbit-secret", amqp_host(v))
    trigger = {
        "type": "rabbitmq",
        "metadata": {
            "protocol": "amqp",
            "queueName": "orders",
            "mode": "QueueLength",
            "value": "5",
        },
        "authenticationRef": {"name": "rabbit-auth"},
    }
    await cluster.create_so(
        scaled_object("worker", "worker", [trigger], pollingInterval=1, cooldownPeriod=300)
    )
    async with running_daemon(kubeconfig):
        await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "True",
            what="Ready=True",
        )
        active = await eventually(
            lambda: cluster.condition("worker", "Active"),
            lambda c: c is not None and c["status"] == "False",
            what="Active=False on an empty queue",
        )
        assert active["status"] == "False"
        assert await cluster.replicas("worker") == 0
        await asyncio.to_thread(v.server.publish, "orders", 3, v.name)
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        hpa = await eventually(
            lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None, what="HPA"
        )
        metric = hpa["spec"]["metrics"][0]["external"]
        assert metric["metric"]["name"] == "s0-rabbitmq-orders"
        assert metric["target"] == {"type": "AverageValue", "averageValue": "5"}
