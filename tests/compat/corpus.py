"""The case table: one KEDA manifest per row, its event source, and KEDA's metric names.

The expected names are written out by hand from KEDA's rules (kedacore/keda, pkg/scalers):
`GenerateMetricNameWithIndex(i, NormalizeString(<type-specific>))` = `s<i>-<…>` where
NormalizeString replaces `/ . : % ( )` with `-` and changes nothing else (capitals,
underscores and non-ASCII letters stay). The type-specific parts:

| trigger | KEDA's detail |
|---|---|
| cron | `cron-<timezone>-<start>-<end>`, schedules without spaces, `*`→`x`, `/`→`Sl`, `?`→`Qm` |
| redis (lists) | `redis-<listName>` |
| redis-streams | `redis-streams-<stream>` |
| kafka | `kafka-<topic>`, or `kafka-<consumerGroup>-topics` without a topic |
| nats-jetstream | `nats-jetstream-<stream>` |
| prometheus | `prometheus` (the query and the old `metricName` do not appear) |
| metrics-api | `metric-api-<valueLocation>` |
| aws-s3 | none in a KEDA release: Tidal's `aws-s3-<bucketName>[-<prefix>]` (docs/s3.md) |
| postgresql | `postgresql` (neither the query nor the database appears) |
| mysql | `mysql-<dbName>`; with a connection string, what follows its last `/` |
| aws-sqs-queue | `aws-sqs-<queueName>`, the last segment of the queue URL |
| rabbitmq | `rabbitmq-<queueName>`, the queue name query-escaped (`url.QueryEscape`) |

`{StartMin}` / `{EndMin}` in a name are the cron minutes filled in at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tests.compat.sources import (
    AppStats,
    Components,
    CronWindow,
    KafkaLag,
    NatsLag,
    PrometheusGauge,
    RabbitQueue,
    RedisList,
    RedisStreamLag,
    S3Objects,
    Source,
    SqlTasks,
    SqsMessages,
)

TOPIC_60 = "Payments.Settlement.EU-West-1.Production.Invoice_Events.V2_0"
LIST_60 = "Tenant_ACME.Billing:Invoices.Pending.HighPriority.EU-West-01"


@dataclass(frozen=True)
class Case:
    id: str
    manifest: str
    source: Callable[[Components], Source]
    # ScaledObject name → status.externalMetricNames KEDA writes for it (in trigger order).
    keda_names: Mapping[str, tuple[str, ...]]
    scaled_object: str  # the object the source drives
    deployment: str  # its workload
    replicas: int = 3  # N: the HPA's answer to the filled-in work
    full_cycle: bool = True  # 0 → 1 → N → 1 → 0; else 0 → 1 → N
    idle: tuple[str, ...] = ()  # workloads of the manifest that must stay at 0
    what: str = ""  # the names it exercises, for docs/keda-compat.md
    notes: Mapping[str, str] = field(default_factory=dict)

    def expected(self, values: Mapping[str, str]) -> dict[str, list[str]]:
        return {so: [n.format(**values) for n in names] for so, names in self.keda_names.items()}


def _cron(zone: str, slug: str, expected_zone: str) -> Case:
    return Case(
        id=f"cron-{slug}",
        manifest=f"cron-{slug}.yaml",
        source=lambda _: CronWindow(zone),
        keda_names={"cron-test-so": (f"s0-cron-{expected_zone}-{{StartMin}}xxxx-{{EndMin}}xxxx",)},
        scaled_object="cron-test-so",
        deployment="cron-test-deployment",
        what=f"time zone `{zone}`",
    )


CASES: tuple[Case, ...] = (
    Case(
        id="nats-jetstream-ORDERS",
        manifest="nats-jetstream-orders.yaml",
        source=lambda c: NatsLag(c.nats, "ORDERS", "PULL_CONSUMER"),
        keda_names={"nats-jetstream-scaledobject": ("s0-nats-jetstream-ORDERS",)},
        scaled_object="nats-jetstream-scaledobject",
        deployment="sub",
        what="stream `ORDERS`, consumer `PULL_CONSUMER`",
    ),
    Case(
        id="nats-jetstream-Payments_EU-auth",
        manifest="nats-jetstream-auth.yaml",
        source=lambda c: NatsLag(c.nats, "Payments_EU", "Settlement_Worker"),
        keda_names={"payments-eu-consumer": ("s0-nats-jetstream-Payments_EU",)},
        scaled_object="payments-eu-consumer",
        deployment="payments-eu-consumer",
        what="stream `Payments_EU`; endpoint and account from a TriggerAuthentication",
    ),
    Case(
        id="kafka-Orders.Created",
        manifest="kafka-orders-created.yaml",
        source=lambda c: KafkaLag(c.kafka, "Orders.Created", "Order-Service"),
        keda_names={"order-service": ("s0-kafka-Orders-Created",)},
        scaled_object="order-service",
        deployment="order-service",
        what="topic `Orders.Created`, group `Order-Service`",
    ),
    Case(
        id="kafka-topic-60-chars",
        manifest="kafka-topic-60-chars.yaml",
        source=lambda c: KafkaLag(c.kafka, TOPIC_60, "settlement-consumer"),
        keda_names={"settlement-consumer": (f"s0-kafka-{TOPIC_60.replace('.', '-')}",)},
        scaled_object="settlement-consumer",
        deployment="settlement-consumer",
        what=f"60-character topic `{TOPIC_60}` (a 69-character metric name)",
    ),
    Case(
        id="kafka-group-topics",
        manifest="kafka-group-topics.yaml",
        source=lambda c: KafkaLag(c.kafka, "Clickstream.PageViews", "Analytics.Consumers"),
        keda_names={"analytics": ("s0-kafka-Analytics-Consumers-topics",)},
        scaled_object="analytics",
        deployment="analytics",
        what="no topic: group `Analytics.Consumers` (`-topics` suffix)",
    ),
    Case(
        id="redis-list-Emails:Outbound.HighPriority",
        manifest="redis-list-capitals.yaml",
        source=lambda c: RedisList(
            c.redis, ["Emails:Outbound.HighPriority"], "Emails:Outbound.HighPriority"
        ),
        keda_names={"email-sender": ("s0-redis-Emails-Outbound-HighPriority",)},
        scaled_object="email-sender",
        deployment="email-sender",
        what="list `Emails:Outbound.HighPriority`; address from the container env",
    ),
    Case(
        id="redis-list-60-chars-auth",
        manifest="redis-list-auth-60-chars.yaml",
        source=lambda c: RedisList(c.redis_auth, [LIST_60], LIST_60),
        keda_names={
            "redis-standalone-lists-test-so": (
                "s0-redis-" + LIST_60.replace(".", "-").replace(":", "-"),
            )
        },
        scaled_object="redis-standalone-lists-test-so",
        deployment="redis-standalone-lists-test-deployment",
        what=f"60-character list `{LIST_60}`; password from a TriggerAuthentication",
    ),
    Case(
        id="redis-list-unicode",
        manifest="redis-list-unicode.yaml",
        source=lambda c: RedisList(c.redis, ["Bestellungen.Übersee"], "Bestellungen.Übersee"),
        keda_names={"bestellungen": ("s0-redis-Bestellungen-Übersee",)},
        scaled_object="bestellungen",
        deployment="bestellungen",
        what="list `Bestellungen.Übersee` (a non-ASCII capital)",
    ),
    Case(
        id="redis-multi-trigger",
        manifest="redis-multi-trigger.yaml",
        source=lambda c: RedisList(c.redis, ["Orders.EU", "Orders.US"], "Orders.US"),
        keda_names={"fulfilment": ("s0-redis-Orders-EU", "s1-redis-Orders-US")},
        scaled_object="fulfilment",
        deployment="fulfilment",
        what="two triggers `Orders.EU`, `Orders.US`: index prefixes s0-, s1-",
    ),
    Case(
        id="redis-case-twins",
        manifest="redis-case-twins.yaml",
        source=lambda c: RedisList(c.redis, ["Jobs", "jobs"], "Jobs"),
        keda_names={"jobs-upper": ("s0-redis-Jobs",), "jobs-lower": ("s0-redis-jobs",)},
        scaled_object="jobs-upper",
        deployment="jobs-upper",
        idle=("jobs-lower",),
        what="lists `Jobs` and `jobs` in one namespace: the HPA asks `s0-redis-jobs` for both",
    ),
    Case(
        id="redis-streams-Orders.Events",
        manifest="redis-streams-lag.yaml",
        source=lambda c: RedisStreamLag(c.redis, "Orders.Events", "Billing_Workers"),
        keda_names={"billing-workers": ("s0-redis-streams-Orders-Events",)},
        scaled_object="billing-workers",
        deployment="billing-workers",
        what="stream `Orders.Events`, group `Billing_Workers` (lag mode)",
    ),
    _cron("Etc/UTC", "etc-utc", "Etc-UTC"),
    _cron("America/New_York", "america-new-york", "America-New_York"),
    _cron("Asia/Kolkata", "asia-kolkata", "Asia-Kolkata"),
    Case(
        id="prometheus-Orders_Backlog",
        manifest="prometheus-capitals.yaml",
        source=lambda c: PrometheusGauge(c, 'Orders_Backlog{Queue="EU.West"}'),
        keda_names={"keda-test-app": ("s0-prometheus",)},
        scaled_object="keda-test-app",
        deployment="keda-test-app",
        what='query `sum(Orders_Backlog{Queue="EU.West"})`, legacy `metricName`',
    ),
    Case(
        id="metrics-api-Components.Worker.Tasks",
        manifest="metrics-api-apikey.yaml",
        source=lambda c: AppStats(c, ["Components", "Worker", "Tasks"]),
        keda_names={"http-scaledobject": ("s0-metric-api-Components-Worker-Tasks",)},
        scaled_object="http-scaledobject",
        deployment="worker",
        what="valueLocation `Components.Worker.Tasks`; apiKey from a TriggerAuthentication",
    ),
    Case(
        id="aws-s3-reports.eu-west-1",
        manifest="aws-s3-prefix.yaml",
        source=lambda c: S3Objects(c.minio, "reports.eu-west-1", "Incoming/Invoices/"),
        keda_names={"invoice-importer": ("s0-aws-s3-reports-eu-west-1-Incoming-Invoices",)},
        scaled_object="invoice-importer",
        deployment="invoice-importer",
        what="bucket `reports.eu-west-1`, prefix `Incoming/Invoices/` (Tidal's own name)",
    ),
    Case(
        id="postgresql-task_instance",
        manifest="postgresql-task-instance.yaml",
        source=lambda c: SqlTasks(c.postgres),
        keda_names={"postgresql-test-so": ("s0-postgresql",)},
        scaled_object="postgresql-test-so",
        deployment="postgresql-test-deployment",
        replicas=2,
        what="KEDA's e2e query; libpq URL from a TriggerAuthentication (Secret `data`)",
    ),
    Case(
        id="mysql-task_instance",
        manifest="mysql-task-instance.yaml",
        source=lambda c: SqlTasks(c.mysql),
        keda_names={"mysql-test-so": ("s0-mysql-test_db",)},
        scaled_object="mysql-test-so",
        deployment="mysql-test-deployment",
        replicas=2,
        what="KEDA's e2e query; Go DSN from a TriggerAuthentication, database `test_db`",
    ),
    Case(
        id="aws-sqs-queue-Payments_EU-Settlement.fifo",
        manifest="aws-sqs-queue-fifo.yaml",
        source=lambda c: SqsMessages(c.elasticmq, "Payments_EU-Settlement.fifo"),
        keda_names={"aws-sqs-queue-test-so": ("s0-aws-sqs-Payments_EU-Settlement-fifo",)},
        scaled_object="aws-sqs-queue-test-so",
        deployment="aws-sqs-queue-test-deployment",
        replicas=2,
        what="KEDA's e2e manifest (+ awsEndpoint): keys from a Secret, FIFO queue URL, target 1,"
        " activation 5, maxReplicaCount 2",
    ),
    Case(
        id="rabbitmq-queue-amqp-hello",
        manifest="rabbitmq-queue-amqp.yaml",
        source=lambda c: RabbitQueue(c.rabbitmq),
        keda_names={"rmq-queue-amqp-test-so": ("s0-rabbitmq-hello",)},
        scaled_object="rmq-queue-amqp-test-so",
        deployment="rmq-queue-amqp-test-deployment",
        replicas=3,
        what="KEDA's e2e manifest: AMQP URI from the worker's envFrom Secret (hostFromEnv),"
        " QueueLength target 10, activation 5, maxReplicaCount 4",
    ),
)

BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"
