"""An `aws-sqs-queue` ScaledObject on the real control plane: the daemon reads a real
SQS-compatible server's queue (ElasticMQ; the access key and secret key from a Secret through
a TriggerAuthentication, as KEDA's docs write it) and scales a Deployment 0 -> 1 when a
message arrives; the HPA carries KEDA's metric name and target."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from localenv.elasticmq import ElasticMqServer
from scaler.kube.paths import namespaced
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object


async def _aws_credentials_auth(cluster: Cluster, name: str, server: ElasticMqServer) -> None:
    """A Secret with the two keys and KEDA's documented TriggerAuthentication reading them."""
    await cluster.kube.create(
        namespaced("", "v1", "secrets", cluster.ns),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-secret"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key,
            },
        },
    )
    refs = [
        {"parameter": "awsAccessKeyID", "name": f"{name}-secret", "key": "AWS_ACCESS_KEY_ID"},
        {
            "parameter": "awsSecretAccessKey",
            "name": f"{name}-secret",
            "key": "AWS_SECRET_ACCESS_KEY",
        },
    ]
    await cluster.kube.create(
        namespaced("keda.sh", "v1alpha1", "triggerauthentications", cluster.ns),
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": name},
            "spec": {"secretTargetRef": refs},
        },
    )


async def test_sqs_queue_scales_a_deployment_from_zero(
    cluster: Cluster, kubeconfig: Path, elasticmq_server: ElasticMqServer
) -> None:
    sqs = elasticmq_server.client()
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    try:
        await cluster.create_deployment(deployment("worker", replicas=0))
        await _aws_credentials_auth(cluster, "keda-trigger-auth-aws-credentials", elasticmq_server)
        trigger = {
            "type": "aws-sqs-queue",
            "metadata": {
                "queueURL": url,
                "queueLength": "5",
                "awsRegion": elasticmq_server.region,
                "awsEndpoint": elasticmq_server.endpoint,
            },
            "authenticationRef": {"name": "keda-trigger-auth-aws-credentials"},
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
            await eventually(
                lambda: cluster.condition("worker", "Active"),
                lambda c: c is not None and c["status"] == "False",
                what="Active=False on an empty queue",
            )
            assert await cluster.replicas("worker") == 0
            await asyncio.to_thread(sqs.send_message, QueueUrl=url, MessageBody="job")
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
            hpa = await eventually(
                lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None, what="HPA"
            )
            metric = hpa["spec"]["metrics"][0]["external"]
            assert metric["metric"]["name"] == f"s0-aws-sqs-{queue}"
            assert metric["target"] == {"type": "AverageValue", "averageValue": "5"}
    finally:
        sqs.delete_queue(QueueUrl=url)
