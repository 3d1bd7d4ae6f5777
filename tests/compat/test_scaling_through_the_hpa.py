"""KEDA's manifests, applied as written, scale through the real HPA controller (issue 14).

Each row is a ScaledObject (with its TriggerAuthentication and Secret when KEDA's docs use one)
from KEDA's documentation and e2e tests, with the names real users pick: capitals, dots,
colons, underscores, 60-character names, time zones with slashes, a non-ASCII letter. One
Tidal (daemon + external metrics API registered behind kube-apiserver's aggregator) serves
every row; the rows run concurrently (see runner.py) and each test asserts its own row:

* the workload went 0 → 1 (Tidal) → N (the HPA, from Tidal's metric) [→ 1 → 0];
* the HPA read every metric: ScalingActive=True, no FailedGetExternalMetric anywhere;
* `status.externalMetricNames` (and the HPA's metric names) equal KEDA's for the object.

The HPA controller asks the metrics API for a metric name in lower case (client-go lowers
the resource segment of the URL), so a name with a capital only scales past 1 replica when
the metrics API matches names as KEDA does, ignoring case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from localenv.certs import extension_server_certs
from localenv.controlplane import ControlPlane
from localenv.elasticmq import ElasticMqServer
from localenv.kafka import KafkaBroker
from localenv.minio import MinioServer
from localenv.mysql import MysqlServer
from localenv.nats import NatsServer
from localenv.postgres import PostgresServer
from localenv.prometheus import PrometheusServer
from localenv.pytest_kube import ApiServiceRegistrar
from localenv.rabbitmq import RabbitMQServer
from localenv.redis import RedisServer
from scaler.kube.client import KubeClient
from scaler.settings import ServeSettings
from tests.compat.corpus import CASES, Case
from tests.compat.kube import hpa_conditions, hpa_current_metric_names
from tests.compat.runner import Outcome, delete_scaled_objects, run_case
from tests.compat.sources import AppServer, Components
from tests.e2e.harness import running_service

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Corpus:
    """Every case started at once; `outcome(id)` waits for one."""

    def __init__(self, kube: KubeClient, components: Components) -> None:
        self.kube = kube
        self.components = components
        self.tasks: dict[str, asyncio.Task[Outcome]] = {}

    def start(self, cases: Sequence[Case]) -> None:
        for case in cases:
            self.tasks[case.id] = asyncio.create_task(
                run_case(case, self.kube, self.components), name=case.id
            )

    async def outcome(self, case_id: str) -> Outcome:
        return await asyncio.shield(self.tasks[case_id])

    async def namespaces(self) -> list[str]:
        body = await self.kube.get("/api/v1/namespaces")
        return [
            item["metadata"]["name"]
            for item in body.get("items", [])
            if item["metadata"]["name"].startswith("compat-")
        ]

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        done = [t.result() for t in self.tasks.values() if not t.cancelled() and not t.exception()]
        if done:
            longest = max(o.seconds for o in done)
            print(f"\n[compat] {len(done)}/{len(self.tasks)} cases done; longest {longest:.1f} s")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corpus(
    crds: ControlPlane,
    kubeconfig: Path,
    run_dir: Path,
    redis_server: RedisServer,
    nats_server: NatsServer,
    kafka_broker: KafkaBroker,
    minio_server: MinioServer,
    postgres_server: PostgresServer,
    mysql_server: MysqlServer,
    elasticmq_server: ElasticMqServer,
    rabbitmq_server: RabbitMQServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Corpus]:
    app = await AppServer(api_key="compat-api-key").start()
    redis_auth = RedisServer(run_dir, password="compat-redis-pw", name="redis-compat").start()
    prometheus = PrometheusServer(run_dir, [app.address], "1s", name="prometheus-compat").start()
    components = Components(
        redis=redis_server,
        redis_auth=redis_auth,
        nats=nats_server,
        kafka=kafka_broker,
        minio=minio_server,
        prometheus=prometheus,
        app=app,
        postgres=postgres_server,
        mysql=mysql_server,
        elasticmq=elasticmq_server,
        rabbitmq=rabbitmq_server,
    )
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    tls = tmp_path_factory.mktemp("compat-tls")
    (tls / "tls.crt").write_bytes(certs.serving.cert_pem)
    (tls / "tls.key").write_bytes(certs.serving.key_pem)
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address="127.0.0.1:0",
        tls_cert_file=str(tls / "tls.crt"),
        tls_key_file=str(tls / "tls.key"),
    )
    kube = await KubeClient.from_kubeconfig(str(kubeconfig))
    registrar = ApiServiceRegistrar(crds)
    corpus = Corpus(kube, components)
    try:
        async with running_service(kubeconfig, serve=serve) as svc:
            await registrar.register(port=svc.api_port, ca_pem=certs.ca.cert_pem)
            corpus.start(CASES)
            try:
                yield corpus
            finally:
                await corpus.close()
                namespaces = await corpus.namespaces()
                with contextlib.suppress(AssertionError):
                    await delete_scaled_objects(kube, namespaces, timeout=30.0)
                for name in namespaces:
                    await kube.delete(f"/api/v1/namespaces/{name}")
                await registrar.unregister_all()
    finally:
        await kube.aclose()
        await app.stop()
        prometheus.stop()
        redis_auth.stop()


def _is_subsequence(wanted: Sequence[int], seen: Sequence[int]) -> bool:
    it = iter(seen)
    return all(any(x == y for y in it) for x in wanted)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_keda_manifest_scales_through_the_hpa(corpus: Corpus, case: Case) -> None:
    outcome = await corpus.outcome(case.id)
    expected = case.expected(outcome.values)

    # The names KEDA gives the same objects: in the status, in the HPA.
    assert outcome.metric_names == expected
    assert outcome.hpa_spec_names == expected

    # 0 → 1 (Tidal) → N (the HPA) [→ 1 (the HPA) → 0 (Tidal)], every write seen by a watch.
    steps = outcome.history
    path = [0, 1, case.replicas] + ([1, 0] if case.full_cycle else [])
    assert steps[0] == 0, steps
    assert max(steps) == case.replicas, steps
    assert _is_subsequence(path, steps), f"{steps} does not go through {path}"
    if not case.full_cycle:
        assert steps[-1] == case.replicas, steps
    if not outcome.starts_active:
        assert outcome.replicas_before_work == 0
    for idle, idle_steps in outcome.idle_history.items():
        assert idle_steps == [0], f"{idle} must not scale: {idle_steps}"

    # The HPA read Tidal's metric through the aggregator and never failed to.
    peak = outcome.hpa_at_peak
    conditions = hpa_conditions(peak)
    assert conditions["ScalingActive"]["status"] == "True", conditions
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound", conditions
    assert conditions["AbleToScale"]["status"] == "True", conditions
    assert sorted(hpa_current_metric_names(peak)) == sorted(expected[case.scaled_object])
    failed = [
        e
        for e in outcome.events
        if e.get("reason") in ("FailedGetExternalMetric", "FailedComputeMetricsReplicas")
    ]
    assert not failed, [f"{e['reason']}: {e.get('message')}" for e in failed]

    # Tidal's own 0 → 1 (and 1 → 0) are the Events KEDA users know.
    reasons = {
        e["reason"] for e in outcome.events if e["involvedObject"].get("name") == case.scaled_object
    }
    assert "KEDAScaleTargetActivated" in reasons
    if case.full_cycle:
        assert "KEDAScaleTargetDeactivated" in reasons
