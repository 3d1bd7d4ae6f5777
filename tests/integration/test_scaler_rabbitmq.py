"""The rabbitmq scaler against a real broker (Debian's rabbitmq-server, started by localenv).

Every test has its own vhost (a name with a space and a slash) and user (a password with '@',
':', '/', ' ' and '%'), so URLs must escape both. The management API's counts and rates follow
the queues within about a second (the component sets ``collect_statistics_interval``), so a
test first waits until the broker's own API shows what it published (`wait_for_messages`).
Reads are counted by the hub (`requests`, `connects`) and, for AMQP connections, by the
broker's connection list.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from urllib.parse import quote

import aiormq
import pytest

from localenv.certs import new_ca
from localenv.faultbrokers import tls_server_context
from localenv.faultproxy import FaultProxy
from localenv.process import free_port
from localenv.pytest_rabbitmq import RabbitVhost
from localenv.rabbitmq import RabbitMQServer
from scaler.clients import ClientPool
from scaler.errors import ConfigError, QueryError, ScalerError
from scaler.registry import build_scaler, prepare
from scalers.rabbitmq import QueueStats, RabbitMQScaler, combine, evaluate
from scalers.rabbitmq_sources import AmqpHub, ManagementHub
from tests.integration.sql_helpers import documents, guarded, manifest_auth, of_kind, trigger

BOTH_PROTOCOLS = pytest.mark.parametrize(
    "protocol", [pytest.param("amqp", id="amqp"), pytest.param("http", id="http")]
)


def _q(text: str) -> str:
    return quote(text, safe="")


def amqp_host(v: RabbitVhost, *, port: int | None = None, password: str | None = None) -> str:
    pw = v.password if password is None else password
    return f"amqp://{_q(v.user)}:{_q(pw)}@{v.server.host}:{port or v.server.port}/{_q(v.name)}"


def http_host(v: RabbitVhost, *, port: int | None = None, password: str | None = None) -> str:
    pw = v.password if password is None else password
    where = f"{v.server.host}:{port or v.server.http_port}"
    return f"http://{_q(v.user)}:{_q(pw)}@{where}/{_q(v.name)}"


def scaler(
    pool: ClientPool,
    meta: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = 3.0,
) -> RabbitMQScaler:
    built = build_scaler(trigger("rabbitmq", meta, auth, index=index, timeout=timeout), pool)
    assert isinstance(built, RabbitMQScaler)
    return built


@pytest.fixture
def jobs(rabbitmq_vhost: RabbitVhost) -> RabbitVhost:
    """Queue `jobs` with 7 messages and `empty` with none, in the test's vhost."""
    server, vhost = rabbitmq_vhost.server, rabbitmq_vhost.name
    server.declare_queue("jobs", vhost)
    server.declare_queue("empty", vhost)
    server.publish("jobs", 7, vhost)
    server.wait_for_messages("jobs", 7, vhost)
    server.wait_for_messages("empty", 0, vhost)
    return rabbitmq_vhost


@contextlib.asynccontextmanager
async def unacked(v: RabbitVhost, queue: str, count: int) -> AsyncIterator[None]:
    """`count` messages of `queue` delivered and not acknowledged while the block runs."""
    conn = await aiormq.connect(amqp_host(v))
    try:
        channel = await conn.channel()
        for _ in range(count):
            got = await channel.basic_get(queue, no_ack=False)
            assert got.delivery.message_count is not None
        yield
    finally:
        await conn.close()


# -- queue length -----------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_queue_length_and_activation(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    host = amqp_host(jobs) if protocol == "amqp" else http_host(jobs)
    meta = {"host": host, "queueName": "jobs", "mode": "QueueLength", "value": "5"}
    below = scaler(pool, {**meta, "activationValue": "7"})
    above = scaler(pool, {**meta, "activationValue": "6.5"})
    empty = scaler(pool, {**meta, "queueName": "empty"})
    s = await below.sample(1.0)
    assert s.value == 7.0
    assert not s.active
    s = await above.sample(1.0)
    assert s.value == 7.0
    assert s.active
    s = await empty.sample(1.0)
    assert s.value == 0.0
    assert not s.active
    assert below.metric_spec().name == "s0-rabbitmq-jobs"
    assert below.metric_spec().target == 5.0
    for each in (below, above, empty):
        await each.aclose()
    assert len(pool) == 0


async def test_unacknowledged_messages_count_over_http_only(
    jobs: RabbitVhost, pool: ClientPool
) -> None:
    """With 2 of 7 delivered and unacked: HTTP counts 7 (ready + unacked), 5 with
    excludeUnacknowledged; AMQP's passive declare counts the 5 ready ones (KEDA's semantics)."""
    meta = {"queueName": "jobs", "mode": "QueueLength", "value": "5"}
    http_all = scaler(pool, {**meta, "host": http_host(jobs)})
    http_ready = scaler(pool, {**meta, "host": http_host(jobs), "excludeUnacknowledged": "true"})
    amqp = scaler(pool, {**meta, "host": amqp_host(jobs)})
    async with unacked(jobs, "jobs", 2):
        await asyncio.to_thread(_wait_ready, jobs, "jobs", 5)
        assert (await http_all.sample(0.0)).value == 7.0
        assert (await http_ready.sample(0.0)).value == 5.0
        assert (await amqp.sample(0.0)).value == 5.0
    for each in (http_all, http_ready, amqp):
        await each.aclose()


def _wait_ready(v: RabbitVhost, queue: str, ready: int) -> None:
    deadline = time.monotonic() + 30
    while v.server.queue_info(queue, v.name).get("messages_ready") != ready:
        assert time.monotonic() < deadline, "the broker's statistics did not show the unacked"
        time.sleep(0.1)


# -- vhosts -----------------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_vhost_from_the_host_or_vhost_name(
    jobs: RabbitVhost, rabbitmq_vhost: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    """The vhost in the host URL, or vhostName overriding a host that names '/': the same
    queue; a queue of that name in '/' (3 messages) is what the root vhost reads."""
    server = jobs.server
    server.add_user("root-reader", "pw", "/", jobs.name)
    server.declare_queue("jobs", "/")
    server.purge_queue("jobs", "/")
    server.publish("jobs", 3, "/")
    server.wait_for_messages("jobs", 3, "/")
    if protocol == "amqp":
        root = f"amqp://root-reader:pw@{server.host}:{server.port}/"
    else:
        root = f"http://root-reader:pw@{server.host}:{server.http_port}/"
    in_host = scaler(
        pool,
        {"host": amqp_host(jobs) if protocol == "amqp" else http_host(jobs), "queueName": "jobs"},
    )
    overridden = scaler(pool, {"host": root, "queueName": "jobs", "vhostName": jobs.name})
    root_vhost = scaler(pool, {"host": root, "queueName": "jobs"})
    assert (await in_host.sample(0.0)).value == 7.0
    assert (await overridden.sample(0.0)).value == 7.0
    assert (await root_vhost.sample(0.0)).value == 3.0
    for each in (in_host, overridden, root_vhost):
        await each.aclose()


async def test_management_api_path_prefix_is_kept_before_api(
    jobs: RabbitVhost, pool: ClientPool
) -> None:
    """KEDA's `http://host:port/<path>/<vhost>`: the path is kept before /api (this broker
    serves the API at the root, so /proxy/api/... is its 404, a QueryError, never a 0)."""
    host = f"http://{_q(jobs.user)}:{_q(jobs.password)}@{jobs.server.host}:{jobs.server.http_port}"
    prefixed = scaler(pool, {"host": f"{host}/proxy/{_q(jobs.name)}", "queueName": "jobs"})
    hub = await prefixed.hub()
    assert isinstance(hub, ManagementHub)
    assert hub.base.endswith("/proxy")
    with pytest.raises(QueryError, match=r"/proxy/api/queues/tenant%20\d+%2Fa/jobs: HTTP 4\d\d"):
        await prefixed.sample(0.0)
    await prefixed.aclose()


# -- rates ------------------------------------------------------------------------------------


async def test_message_rate_over_http(rabbitmq_vhost: RabbitVhost, pool: ClientPool) -> None:
    """Publishing 20 messages/s: MessageRate reads the broker's publish rate (between 10 and
    30/s while it lasts; the broker averages over its statistics interval), active; a queue
    nobody publishes to reads 0 and, empty, is not active."""
    v = rabbitmq_vhost
    v.server.declare_queue("rate", v.name)
    v.server.declare_queue("idle", v.name)
    v.server.wait_for_messages("idle", 0, v.name)
    meta = {"host": http_host(v), "mode": "MessageRate", "value": "100"}
    rate = scaler(pool, {**meta, "queueName": "rate"})
    idle = scaler(pool, {**meta, "queueName": "idle"})
    stop = asyncio.Event()

    async def publish() -> None:
        conn = await aiormq.connect(amqp_host(v))
        channel = await conn.channel()
        while not stop.is_set():
            await channel.basic_publish(b"x", routing_key="rate")
            await asyncio.sleep(0.05)
        await conn.close()

    publisher = asyncio.create_task(publish())
    seen: list[float] = []
    try:
        for tick in range(200):
            sample = await rate.sample(float(tick))
            seen.append(sample.value)
            if 10.0 <= sample.value <= 30.0 and len([x for x in seen if x > 0]) >= 3:
                assert sample.active
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no publish rate near 20/s was read: {seen[-10:]}")
    finally:
        stop.set()
        await publisher
    s = await idle.sample(0.0)
    assert s.value == 0.0
    assert not s.active
    await rate.aclose()
    await idle.aclose()


# -- regex and operations ---------------------------------------------------------------------


@pytest.fixture
def regex_queues(rabbitmq_vhost: RabbitVhost) -> RabbitVhost:
    """jobs-a: 3, jobs-b: 6, other: 11 messages."""
    v = rabbitmq_vhost
    for name, count in (("jobs-a", 3), ("jobs-b", 6), ("other", 11)):
        v.server.declare_queue(name, v.name)
        v.server.publish(name, count, v.name)
        v.server.wait_for_messages(name, count, v.name)
    return v


@pytest.mark.parametrize(
    ("operation", "value"),
    [
        pytest.param("sum", 9.0, id="sum"),
        pytest.param("max", 6.0, id="max"),
        pytest.param("avg", 4.0, id="avg-truncated"),  # 9 / 2 as Go's integer division
    ],
)
async def test_regex_operations(
    regex_queues: RabbitVhost, pool: ClientPool, operation: str, value: float
) -> None:
    meta = {
        "host": http_host(regex_queues),
        "queueName": "^jobs-.*$",
        "useRegex": "true",
        "operation": operation,
        "value": "5",
        "mode": "QueueLength",
    }
    s = scaler(pool, meta)
    assert (await s.sample(0.0)).value == value
    assert s.metric_spec().name == "s0-rabbitmq--5Ejobs---2A-24"
    await s.aclose()


async def test_regex_matching_nothing_is_zero_and_more_than_a_page_is_an_error(
    regex_queues: RabbitVhost, pool: ClientPool
) -> None:
    """No queue matching is KEDA's 0 (no queue, no work); a match beyond pageSize is a
    QueryError (KEDA: 'more queues than can be recovered at once')."""
    meta = {"host": http_host(regex_queues), "useRegex": "true"}
    none = scaler(pool, {**meta, "queueName": "^nothing-.*$"})
    assert (await none.sample(0.0)).value == 0.0
    paged = scaler(pool, {**meta, "queueName": "^jobs-.*$", "pageSize": "1"})
    with pytest.raises(QueryError, match="more queues than can be recovered"):
        await paged.sample(0.0)
    await none.aclose()
    await paged.aclose()


# -- authentication ---------------------------------------------------------------------------

DOC_AMQP_USER_PASSWORD = """
apiVersion: v1
kind: Secret
metadata:
  name: keda-rabbitmq-secret
data:
  host: <AMQP URI connection string> # base64 encoded value of format amqp://localhost:5672/vhost (no username/password)
  username: <username> # base64 encoded value of username
  password: <password> # base64 encoded value of password
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-rabbitmq-conn
  namespace: default
spec:
  secretTargetRef:
    - parameter: host
      name: keda-rabbitmq-secret
      key: host
    - parameter: username
      name: keda-rabbitmq-secret
      key: username
    - parameter: password
      name: keda-rabbitmq-secret
      key: password
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: rabbitmq-scaledobject
  namespace: default
spec:
  scaleTargetRef:
    name: rabbitmq-deployment
  triggers:
  - type: rabbitmq
    metadata:
      protocol: amqp
      queueName: testqueue
      mode: QueueLength
      value: "20"
    authenticationRef:
      name: keda-trigger-auth-rabbitmq-conn
"""  # noqa: E501


@BOTH_PROTOCOLS
async def test_credentials_from_a_secret_through_trigger_authentication(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    """KEDA's documented Secret + TriggerAuthentication (host without credentials, username
    and password apart), resolved by the daemon's resolver, with the Secret pointing at the
    test broker; the ScaledObject's trigger as documented, queue renamed."""
    docs = documents(DOC_AMQP_USER_PASSWORD)
    (secret,) = of_kind(docs, "Secret")
    server = jobs.server
    port = server.port if protocol == "amqp" else server.http_port
    secret["data"] = {}
    secret["stringData"] = {
        "host": f"{protocol}://{server.host}:{port}/{_q(jobs.name)}",
        "username": jobs.user,
        "password": jobs.password,
    }
    auth = await manifest_auth(docs, "keda-trigger-auth-rabbitmq-conn")
    (so,) = of_kind(docs, "ScaledObject")
    meta = dict(so["spec"]["triggers"][0]["metadata"], protocol=protocol, queueName="jobs")
    s = scaler(pool, meta, auth)
    sample = await s.sample(0.0)
    assert (sample.value, sample.active) == (7.0, True)
    assert s.metric_spec().target == 20.0
    await s.aclose()


@pytest.mark.parametrize(
    ("protocol", "fragment"),
    [
        pytest.param("amqp", "authentication failed", id="amqp"),
        pytest.param("http", "HTTP 401", id="http"),
    ],
)
async def test_wrong_password_is_a_clear_error_without_the_secret(
    jobs: RabbitVhost, pool: ClientPool, protocol: str, fragment: str
) -> None:
    wrong = "not-the-Pa55word"
    host = (amqp_host if protocol == "amqp" else http_host)(jobs, password=wrong)
    s = scaler(pool, {"host": host, "queueName": "jobs"})
    with pytest.raises(ScalerError) as info:
        await guarded(s.sample(0.0))
    assert fragment in str(info.value)
    assert wrong not in str(info.value)
    via_auth = scaler(
        pool,
        {"host": amqp_host(jobs) if protocol == "amqp" else http_host(jobs), "queueName": "jobs"},
        {"username": jobs.user, "password": wrong},
    )
    with pytest.raises(ScalerError) as info:
        await guarded(via_auth.sample(0.0))
    assert fragment in str(info.value)
    assert wrong not in str(info.value)
    await s.aclose()
    await via_auth.aclose()


async def test_a_missing_queue_is_a_query_error_and_the_connection_stays_good(
    jobs: RabbitVhost, pool: ClientPool
) -> None:
    """AMQP: the broker closes the channel with 404; the hub's other channels and connection
    go on (one connection opened in all)."""
    missing = scaler(pool, {"host": amqp_host(jobs), "queueName": "nope"})
    ok = scaler(pool, {"host": amqp_host(jobs), "queueName": "jobs"})
    with pytest.raises(QueryError, match="queue 'nope': queue not found"):
        await missing.sample(0.0)
    assert (await ok.sample(0.0)).value == 7.0
    with pytest.raises(QueryError, match="not found"):
        await missing.sample(1.0)
    assert (await ok.sample(1.0)).value == 7.0
    hub = await ok.hub()
    assert isinstance(hub, AmqpHub)
    assert hub.connects == 1
    http_missing = scaler(pool, {"host": http_host(jobs), "queueName": "nope"})
    with pytest.raises(QueryError, match="HTTP 404"):
        await http_missing.sample(0.0)
    for each in (missing, ok, http_missing):
        await each.aclose()


# -- broker down or hung ----------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_refused_connection_is_a_scaler_error(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    port = free_port()
    host = (amqp_host if protocol == "amqp" else http_host)(jobs, port=port)
    s = scaler(pool, {"host": host, "queueName": "jobs"}, timeout=1.0)
    with pytest.raises(ScalerError) as info:
        await guarded(s.sample(0.0))
    assert not isinstance(info.value, QueryError)
    assert jobs.password not in str(info.value)
    await s.aclose()


@BOTH_PROTOCOLS
async def test_hung_broker_fails_in_the_timeout_and_stalls_no_other_object(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    """Through a proxy that accepts and never answers: a ScalerError (no zero) after the 1 s
    timeout, while an object on the healthy broker, sampled at the same time, answers first."""
    server = jobs.server
    upstream = server.port if protocol == "amqp" else server.http_port
    make = amqp_host if protocol == "amqp" else http_host
    with FaultProxy((server.host, upstream), name=f"proxy-rabbitmq-{protocol}") as proxy:
        proxy.blackhole()
        hung = scaler(pool, {"host": make(jobs, port=proxy.port), "queueName": "jobs"}, timeout=1.0)
        healthy = scaler(pool, {"host": make(jobs), "queueName": "jobs"}, timeout=1.0)
        hung_task = asyncio.ensure_future(hung.sample(0.0))
        healthy_task = asyncio.ensure_future(healthy.sample(0.0))
        done, _ = await asyncio.wait({hung_task, healthy_task}, return_when=asyncio.FIRST_COMPLETED)
        assert healthy_task in done
        assert hung_task not in done
        assert healthy_task.result().value == 7.0
        with pytest.raises(ScalerError) as info:
            await guarded(hung_task)
        assert not isinstance(info.value, QueryError)
        assert "no answer within 1 s" in str(info.value)
        proxy.pass_through()
        assert (await guarded(hung.sample(1.0))).value == 7.0  # recovers once it answers
        await hung.aclose()
        await healthy.aclose()


async def test_broker_restart_is_survived_and_a_stopped_broker_is_an_error(
    rabbitmq_factory: Callable[[], RabbitMQServer], pool: ClientPool
) -> None:
    """A private broker: restarted between two polls, the AMQP read retries once on a new
    connection (no error); stopped, a ScalerError."""
    server = rabbitmq_factory()
    server.declare_queue("jobs", "/")
    server.publish("jobs", 4, "/")
    v = RabbitVhost(server, "/", "guest", "guest")
    s = scaler(pool, {"host": amqp_host(v), "queueName": "jobs"}, timeout=2.0)
    assert (await s.sample(0.0)).value == 4.0
    server.restart()
    server.declare_queue("jobs", "/")  # transient queue: declared again after the restart
    server.publish("jobs", 2, "/")
    assert (await guarded(s.sample(1.0))).value == 2.0
    server.stop()
    with pytest.raises(ScalerError) as info:
        await guarded(s.sample(2.0))
    assert not isinstance(info.value, QueryError)
    await s.aclose()


# -- coalescing -------------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_objects_reading_one_queue_share_one_read_per_tick(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    """8 objects on one queue, one broker, one credential: one declare (or GET) per tick, one
    hub, one AMQP connection (the broker lists one); another queue is its own read."""
    host = amqp_host(jobs) if protocol == "amqp" else http_host(jobs)
    same = [scaler(pool, {"host": host, "queueName": "jobs"}, index=i) for i in range(8)]
    other = scaler(pool, {"host": host, "queueName": "empty"})
    for tick in range(3):
        samples = await asyncio.gather(*(s.sample(float(tick)) for s in [*same, other]))
        assert [x.value for x in samples] == [7.0] * 8 + [0.0]
    hub = await same[0].hub()
    assert all([await s.hub() is hub for s in [*same, other]])
    assert hub.requests == 3 * 2
    if isinstance(hub, AmqpHub):
        assert hub.connects == 1
        assert await asyncio.to_thread(_connections_of, jobs) == 1
    for s in [*same, other]:
        await s.aclose()
    assert len(pool) == 0, pool._entries


def _connections_of(v: RabbitVhost) -> int:
    """The broker's count of `v.user`'s connections, once its statistics list any (they lag
    by up to a second); a second one would show up with the first."""
    deadline = time.monotonic() + 30
    while True:
        found = [c for c in v.server.connections() if c.get("user") == v.user]
        if found or time.monotonic() > deadline:
            time.sleep(1.5)  # one more statistics interval: a second connection would show
            return len([c for c in v.server.connections() if c.get("user") == v.user])
        time.sleep(0.1)


async def test_different_credentials_or_vhosts_are_not_coalesced(
    jobs: RabbitVhost, pool: ClientPool
) -> None:
    a = scaler(pool, {"host": amqp_host(jobs), "queueName": "jobs"})
    b = scaler(
        pool,
        {"host": amqp_host(jobs), "queueName": "jobs"},
        {"username": "guest", "password": "guest"},
    )
    await asyncio.gather(a.sample(0.0), b.sample(0.0))
    assert await a.hub() is not await b.hub()
    await a.aclose()
    await b.aclose()


# -- KEDA's documented triggers ---------------------------------------------------------------

DOC_EXAMPLES = {
    "amqp": {"protocol": "amqp", "queueName": "testqueue", "mode": "QueueLength", "value": "20"},
    "http-message-rate": {
        "protocol": "http",
        "queueName": "testqueue",
        "mode": "MessageRate",
        "value": "100",
    },
    "http-regex": {
        "protocol": "http",
        "queueName": "^.*incoming$",
        "mode": "QueueLength",
        "value": "20",
        "useRegex": "true",
        "operation": "max",
    },
    "deliver-get-rate": {
        "protocol": "http",
        "queueName": "testqueue",
        "mode": "DeliverGetRate",
        "value": "30",
    },
    "published-to-delivered": {
        "protocol": "http",
        "queueName": "testqueue",
        "mode": "PublishedToDeliveredRatio",
        "value": "1.1",
    },
    "expected-consumption-time": {
        "protocol": "http",
        "queueName": "testqueue",
        "mode": "ExpectedQueueConsumptionTime",
        "value": "20",
    },
    "trigger-spec": {
        "host": "amqp://localhost:5672/vhost",
        "protocol": "auto",
        "mode": "QueueLength",
        "value": "100.50",
        "activationValue": "10.5",
        "queueName": "testqueue",
        "vhostName": "/",
        "hostFromEnv": "RABBITMQ_HOST",
        "usernameFromEnv": "RABBITMQ_USERNAME",
        "passwordFromEnv": "RABBITMQ_PASSWORD",
        "unsafeSsl": "true",
    },
    "v2.4-deprecated-queue-length": {
        "host": "amqp://localhost:5672/vhost",
        "queueName": "testqueue",
        "queueLength": "20",
    },
}
_AUTH = {
    "amqp": {"host": "amqp://guest:password@localhost:5672/vhost"},
    "http": {"host": "http://guest:password@localhost:15672/path/vhost"},
}


@pytest.mark.parametrize(
    ("name", "target", "mode"),
    [
        pytest.param("amqp", 20.0, "QueueLength", id="amqp"),
        pytest.param("http-message-rate", 100.0, "MessageRate", id="http-message-rate"),
        pytest.param("http-regex", 20.0, "QueueLength", id="http-regex"),
        pytest.param("deliver-get-rate", 30.0, "DeliverGetRate", id="deliver-get-rate"),
        pytest.param("published-to-delivered", 1.1, "PublishedToDeliveredRatio", id="p2d-ratio"),
        pytest.param("expected-consumption-time", 20.0, "ExpectedQueueConsumptionTime", id="eqct"),
        pytest.param("trigger-spec", 100.5, "QueueLength", id="trigger-spec"),
        pytest.param("v2.4-deprecated-queue-length", 20.0, "QueueLength", id="queue-length"),
    ],
)
async def test_documented_triggers_parse_unchanged(
    pool: ClientPool, name: str, target: float, mode: str
) -> None:
    """KEDA's documented triggers (host from the TriggerAuthentication's Secret, or the env)
    build as written, with KEDA's target, mode and metric name; never dialled here."""
    meta = DOC_EXAMPLES[name]
    auth = {} if "host" in meta else _AUTH["http" if meta.get("protocol") == "http" else "amqp"]
    env = {"RABBITMQ_HOST": "amqp://localhost:5672/", "RABBITMQ_USERNAME": "u"}
    env["RABBITMQ_PASSWORD"] = "p"
    prepared = prepare(trigger("rabbitmq", meta, auth, env))
    assert not prepared.config.unknown_keys
    s = RabbitMQScaler(prepared.config, prepared.trigger, pool)
    assert s.metric_spec().target == target
    assert s._mode == mode
    await s.aclose()


@pytest.mark.parametrize(
    ("meta", "auth", "problem"),
    [
        pytest.param({"mode": "QueueLength"}, {}, "value must be specified", id="no-value"),
        pytest.param({"value": "5"}, {}, "mode must be specified", id="no-mode"),
        pytest.param(
            {"queueLength": "5", "value": "5"}, {}, "queueLength is deprecated", id="deprecated"
        ),
        pytest.param({"mode": "Bogus", "value": "5"}, {}, "trigger mode Bogus", id="bad-mode"),
        pytest.param(
            {"mode": "MessageRate", "value": "5"},
            {},
            "must be HTTP to use trigger mode",
            id="rate-over-amqp",
        ),
        pytest.param({"useRegex": "true"}, {}, "useRegex=true only with HTTP", id="regex-amqp"),
        pytest.param({"timeout": "500"}, {}, "AMQP protocol doesn't support", id="amqp-timeout"),
        pytest.param({"protocol": "kafka"}, {}, "the protocol has to be either", id="protocol"),
        pytest.param({}, {"username": "u"}, "username and password must be given", id="user"),
        pytest.param({}, {"tls": "yes"}, "incorrect value for TLS given: yes", id="tls-value"),
        pytest.param({}, {"tls": "enable"}, "use amqps://", id="tls-plain-scheme"),
        pytest.param({}, {"cert": "x"}, "both key and certificate", id="cert-alone"),
        pytest.param({"pageSize": "0"}, {}, "pageSize should be 1 or greater", id="page-size"),
        pytest.param({"operation": "min"}, {}, "must be one of [sum avg max]", id="operation"),
        pytest.param({"host": "ftp://x/"}, {}, "unknown host URL scheme: `ftp`", id="scheme"),
        pytest.param(
            {}, {"clientID": "client-1"}, "OAuth2 authentication is not supported", id="oauth"
        ),
    ],
)
def test_configuration_problems_are_config_errors(
    meta: dict[str, str], auth: dict[str, str], problem: str
) -> None:
    base = {"host": "amqp://u:secret-pw@localhost:5672/", "queueName": "q"}
    with pytest.raises(ConfigError) as info:
        prepare(trigger("rabbitmq", {**base, **meta}, auth))
    assert problem in str(info.value)
    assert "secret-pw" not in str(info.value)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def tls_proxy(
    jobs: RabbitVhost, request: pytest.FixtureRequest
) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy terminating TLS (a certificate for 127.0.0.1 from a fresh CA) in front of the
    broker's AMQP or management port: the broker as amqps:// or https:// (Debian's broker runs
    without TLS listeners here). Yields the proxy and the CA's PEM."""
    protocol = request.param
    ca = new_ca(f"rabbitmq-test-{protocol}")
    upstream = jobs.server.port if protocol == "amqp" else jobs.server.http_port
    with FaultProxy((jobs.server.host, upstream), name=f"proxy-rabbitmq-tls-{protocol}") as proxy:
        proxy.terminate_tls(tls_server_context(ca))
        yield proxy, ca.cert_pem.decode()


def _tls_host(v: RabbitVhost, proxy: FaultProxy, protocol: str) -> str:
    plain = amqp_host(v, port=proxy.port) if protocol == "amqp" else http_host(v, port=proxy.port)
    return plain.replace(f"{protocol}://", f"{protocol}s://", 1)


@pytest.mark.parametrize(
    ("tls_proxy", "protocol"),
    [pytest.param("amqp", "amqp", id="amqps"), pytest.param("http", "http", id="https")],
    indirect=["tls_proxy"],
)
async def test_tls_with_the_ca_from_trigger_authentication(
    jobs: RabbitVhost, pool: ClientPool, tls_proxy: tuple[FaultProxy, str], protocol: str
) -> None:
    """tls: enable with the CA from the TriggerAuthentication reads the queue; another CA, or
    none (the system store), is a ScalerError naming the certificate check; unsafeSsl reads it
    without a CA, as KEDA documents."""
    proxy, ca_pem = tls_proxy
    meta = {"host": _tls_host(jobs, proxy, protocol), "queueName": "jobs"}
    trusted = scaler(pool, meta, {"tls": "enable", "ca": ca_pem})
    assert (await guarded(trusted.sample(0.0))).value == 7.0
    other = new_ca("rabbitmq-test-other").cert_pem.decode()
    untrusted = scaler(pool, meta, {"tls": "enable", "ca": other})
    system = scaler(pool, meta, timeout=2.0)
    for failing in (untrusted, system):
        with pytest.raises(ScalerError) as info:
            await guarded(failing.sample(0.0))
        assert not isinstance(info.value, QueryError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value)
    unsafe = scaler(pool, {**meta, "unsafeSsl": "true"})
    assert (await guarded(unsafe.sample(0.0))).value == 7.0
    for each in (trusted, untrusted, system, unsafe):
        await each.aclose()


# -- KEDA's arithmetic (no broker) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stats", "activation", "value", "active"),
    [
        pytest.param("QueueLength", (7, 0, 0), 7.0, 7.0, False, id="length-at-activation"),
        pytest.param("MessageRate", (0, 2.5, 0), 2.0, 2.5, True, id="rate-above"),
        pytest.param("MessageRate", (9, 0, 0), 5.0, 0.0, True, id="rate-zero-backlog-active"),
        pytest.param("DeliverGetRate", (0, 0, 4), 4.0, 4.0, False, id="deliver-at-activation"),
        pytest.param("PublishedToDeliveredRatio", (0, 6, 3), 1.0, 2.0, True, id="ratio"),
        pytest.param(
            "PublishedToDeliveredRatio", (0, 6, 0), 1.5, 1.5, True, id="ratio-nothing-delivered"
        ),
        pytest.param("PublishedToDeliveredRatio", (0, 0, 3), 0.5, 0.0, False, id="ratio-idle"),
        pytest.param(
            "ExpectedQueueConsumptionTime", (40, 10, 5), 0.0, 9.0, True, id="eqct"
        ),  # (10 - 5) / 5 + 40 / 5
        pytest.param(
            "ExpectedQueueConsumptionTime", (40, 10, 0), 3.0, 3.0, True, id="eqct-no-delivery"
        ),
    ],
)
def test_mode_values_and_activity_are_kedas(
    mode: str,
    stats: tuple[float, float, float],
    activation: float,
    value: float,
    active: bool,
) -> None:
    assert evaluate(mode, QueueStats(*stats), activation) == (value, active)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        pytest.param("sum", (10.0, 3.0, 6.0), id="sum"),
        pytest.param("max", (7.0, 2.0, 4.0), id="max"),
        pytest.param("avg", (3.0, 1.0, 2.0), id="avg-messages-truncated"),
    ],
)
def test_regex_operations_combine_counts_and_rates(
    operation: str, expected: tuple[float, float, float]
) -> None:
    queues = [QueueStats(7, 2, 4), QueueStats(3, 1, 2), QueueStats(0, 0, 0)]
    combined = combine(queues, operation)
    assert (combined.messages, combined.publish_rate, combined.deliver_get_rate) == expected


@BOTH_PROTOCOLS
async def test_a_broker_that_stops_answering_on_an_open_connection_fails_then_recovers(
    jobs: RabbitVhost, pool: ClientPool, protocol: str
) -> None:
    """The connection is up, then every answer is held back 30 s (the proxy's delay): the
    sample fails with a ScalerError after the 1 s timeout, never a 0; answers flowing again,
    the next sample reads the queue."""
    server = jobs.server
    upstream = server.port if protocol == "amqp" else server.http_port
    make = amqp_host if protocol == "amqp" else http_host
    with FaultProxy((server.host, upstream), name=f"proxy-rabbitmq-slow-{protocol}") as proxy:
        s = scaler(pool, {"host": make(jobs, port=proxy.port), "queueName": "jobs"}, timeout=1.0)
        assert (await guarded(s.sample(0.0))).value == 7.0
        proxy.delay(30.0)
        with pytest.raises(ScalerError) as info:
            await guarded(s.sample(1.0))
        assert not isinstance(info.value, QueryError)
        assert "no answer within 1 s" in str(info.value)
        proxy.pass_through()
        assert (await guarded(s.sample(2.0))).value == 7.0
        await s.aclose()


async def test_metadata_timeout_overrides_the_global_one_over_http(
    jobs: RabbitVhost, pool: ClientPool
) -> None:
    """KEDA's per-trigger `timeout` (ms): against a management endpoint that never answers,
    the sample fails after the trigger's 500 ms, not the 30 s global timeout."""
    server = jobs.server
    with FaultProxy((server.host, server.http_port), name="proxy-rabbitmq-timeout") as proxy:
        proxy.blackhole()
        meta = {"host": http_host(jobs, port=proxy.port), "queueName": "jobs", "timeout": "500"}
        s = scaler(pool, meta, timeout=30.0)
        with pytest.raises(ScalerError, match=r"no answer within 0\.5 s"):
            await guarded(s.sample(0.0))
        await s.aclose()
