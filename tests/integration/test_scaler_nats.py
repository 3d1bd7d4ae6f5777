"""The nats-jetstream scaler against real nats-server processes with JetStream on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from localenv.faultproxy import FaultProxy
from localenv.nats import NatsServer, nats_server_bin
from localenv.process import ManagedProcess, free_port, tcp_open
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.nats_client import NatsTarget, subject_wakeups
from scalers.nats_jetstream import NatsJetStreamScaler

T = TypeVar("T")

MODES = [pytest.param("monitoring", id="monitoring"), pytest.param("client", id="client")]


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _scaler(
    pool: ClientPool,
    mode: str,
    *,
    monitoring: str,
    url: str,
    stream: str,
    consumer: str,
    auth: dict[str, str] | None = None,
    timeout: float = 3.0,
    metadata: dict[str, str] | None = None,
) -> NatsJetStreamScaler:
    meta = {"stream": stream, "consumer": consumer, **(metadata or {})}
    if mode == "monitoring":
        meta |= {"natsServerMonitoringEndpoint": monitoring, "account": "$G"}
    else:
        meta["natsServer"] = url
    trigger = TriggerContext(
        "ns", "so", 0, "nats-jetstream", "", meta, auth_params=auth or {}, timeout=timeout
    )
    scaler = build_scaler(trigger, pool)
    assert isinstance(scaler, NatsJetStreamScaler)
    assert scaler.mode == mode
    return scaler


@dataclass
class Queue:
    """A stream with one durable pull consumer (explicit acks) and a publisher."""

    nc: Client
    js: JetStreamContext
    stream: str
    consumer: str

    async def publish(self, count: int) -> None:
        for i in range(count):
            await self.js.publish(f"{self.stream}.work", str(i).encode())

    async def deliver(self, count: int) -> list[Msg]:
        sub = await self.js.pull_subscribe(
            f"{self.stream}.work", durable=self.consumer, stream=self.stream
        )
        return await sub.fetch(count, timeout=5)


async def _queue(url: str, replicas: int = 1) -> Queue:
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream, consumer = _name("S"), _name("c")
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=replicas)
    config = ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT)
    await js.add_consumer(stream, config)
    return Queue(nc, js, stream, consumer)


@pytest.fixture
async def queue(nats_server: NatsServer) -> AsyncIterator[Queue]:
    q = await _queue(nats_server.url)
    yield q
    await q.js.delete_stream(q.stream)
    await q.nc.close()


def _for(
    server: NatsServer,
    queue: Queue,
    pool: ClientPool,
    mode: str,
    timeout: float = 3.0,
    **metadata: str,
) -> NatsJetStreamScaler:
    return _scaler(
        pool,
        mode,
        monitoring=server.monitoring,
        url=server.url,
        stream=queue.stream,
        consumer=queue.consumer,
        timeout=timeout,
        metadata=metadata,
    )


@pytest.mark.parametrize("mode", MODES)
async def test_lag_is_pending_plus_ack_pending(
    nats_server: NatsServer, queue: Queue, pool: ClientPool, mode: str
) -> None:
    scaler = _for(nats_server, queue, pool, mode)
    assert scaler.metric_spec().name == f"s0-nats-jetstream-{queue.stream}"
    empty = await scaler.sample(1000.0)
    assert (empty.value, empty.active, empty.observed_at) == (0.0, False, 1000.0)

    await queue.publish(5)
    assert (await scaler.sample(1001.0)).value == 5  # 5 pending

    delivered = await queue.deliver(2)
    assert (await scaler.sample(1002.0)).value == 5  # 3 pending + 2 ack-pending

    await delivered[0].ack_sync()
    after_ack = await scaler.sample(1003.0)
    assert (after_ack.value, after_ack.active) == (4.0, True)

    await delivered[1].ack_sync()
    for msg in await queue.deliver(3):
        await msg.ack_sync()
    drained = await scaler.sample(1004.0)
    assert (drained.value, drained.active) == (0.0, False)
    await scaler.aclose()


async def test_both_modes_give_the_same_numbers(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    monitoring = _for(nats_server, queue, pool, "monitoring")
    client = _for(nats_server, queue, pool, "client")
    await queue.publish(9)
    delivered = await queue.deliver(4)
    await delivered[0].ack_sync()
    first, second = await asyncio.gather(monitoring.sample(1.0), client.sample(1.0))
    assert first.value == second.value == 8  # 5 pending + 3 ack-pending
    await monitoring.aclose()
    await client.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_activation_threshold_is_strict(
    nats_server: NatsServer, queue: Queue, pool: ClientPool, mode: str
) -> None:
    scaler = _for(nats_server, queue, pool, mode, activationLagThreshold="3", lagThreshold="2")
    assert scaler.metric_spec().target == 2.0
    await queue.publish(3)
    at = await scaler.sample(1.0)
    assert (at.value, at.active) == (3.0, False)
    await queue.publish(1)
    above = await scaler.sample(2.0)
    assert (above.value, above.active) == (4.0, True)
    await scaler.aclose()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("missing", "words"),
    [
        pytest.param("stream", "stream", id="missing-stream"),
        pytest.param("consumer", "consumer", id="missing-consumer"),
    ],
)
async def test_missing_stream_or_consumer_is_an_error(
    nats_server: NatsServer, queue: Queue, pool: ClientPool, mode: str, missing: str, words: str
) -> None:
    stream = "NoSuchStream" if missing == "stream" else queue.stream
    consumer = "no-such-consumer" if missing == "consumer" else queue.consumer
    await queue.publish(2)
    scaler = _scaler(
        pool,
        mode,
        monitoring=nats_server.monitoring,
        url=nats_server.url,
        stream=stream,
        consumer=consumer,
    )
    with pytest.raises(QueryError, match=words) as info:
        await scaler.sample(1.0)
    assert "not found" in str(info.value)
    await scaler.aclose()


async def test_one_jsz_request_answers_every_object_on_the_account(
    nats_server: NatsServer, pool: ClientPool
) -> None:
    queues = [await _queue(nats_server.url) for _ in range(3)]
    try:
        scalers = []
        for n, q in enumerate(queues):
            await q.publish(n + 1)
            scalers += [_for(nats_server, q, pool, "monitoring") for _ in range(4)]
        samples = await asyncio.gather(*(s.sample(1.0) for s in scalers))
        assert [s.value for s in samples] == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
        pollers = {id(s.poller) for s in scalers}
        assert len(pollers) == 1
        poller = scalers[0].poller
        assert poller is not None
        assert (poller.jsz_requests, poller.varz_requests) == (1, 0)

        await asyncio.gather(*(s.sample(2.0) for s in scalers))
        assert poller.jsz_requests == 2  # one more per tick, not one per object
        for s in scalers:
            await s.aclose()
        assert len(pool) == 0  # the poller and its HTTP session are released with the last one
    finally:
        for q in queues:
            await q.nc.close()


def _jsz_served(server: NatsServer) -> int:
    """GET /jsz requests the server has answered (its own /varz ``http_req_stats``)."""
    with urllib.request.urlopen(f"http://{server.monitoring}/varz", timeout=5) as resp:
        return int((json.loads(resp.read()).get("http_req_stats") or {}).get("/jsz", 0))


async def test_polls_spread_over_a_second_share_a_snapshot(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    """100 objects polling once a second, each at its own phase (10 ms apart), must not each
    open a batch of their own: a /jsz answer serves every sample up to 0.5 s younger than the
    one it was fetched for, so a second of polls costs 2 GETs, not 100 (issue 19: 11.3 /s at
    100 objects, each listing every consumer of the account).

    Requests are counted by the NATS server itself (its /varz ``http_req_stats``), not by a
    counting proxy in front of it: the server's own count is what it served, with no fake in
    the path; the poller's `jsz_requests` must agree with it."""
    await queue.publish(2)
    scalers = [_for(nats_server, queue, pool, "monitoring") for _ in range(100)]
    served0 = _jsz_served(nats_server)
    values = []
    for i, scaler in enumerate(scalers):  # sample times 100.00 .. 100.99 s, 10 ms apart
        values.append((await scaler.sample(100.0 + i / 100)).value)
        await asyncio.sleep(0.01)  # each sample in a batch of its own (window 5 ms)
    assert values == [2.0] * 100
    served = _jsz_served(nats_server) - served0
    poller = scalers[0].poller
    assert poller is not None
    assert served == poller.jsz_requests == 2  # at 100.00 and at 100.51

    await queue.publish(1)  # a sample more than 0.5 s on never reuses an older answer
    assert (await scalers[0].sample(101.6)).value == 3
    assert _jsz_served(nats_server) - served0 == 3
    for scaler in scalers:
        await scaler.aclose()


async def test_an_answer_half_a_second_old_serves_while_the_next_is_fetched(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    """Between 0.5 and 1 s old, the last answer is served at once and the first such sample
    starts ONE new GET in the background, so polls never queue behind it; once it is in, it
    serves."""
    await queue.publish(1)
    first, second = (_for(nats_server, queue, pool, "monitoring") for _ in range(2))
    assert (await first.sample(10.0)).value == 1
    await queue.publish(1)
    served0 = _jsz_served(nats_server)
    assert (await second.sample(10.7)).value == 1  # the old answer, without waiting
    values = []
    for _ in range(100):  # a hang guard: the background GET's answer comes in
        values.append((await second.sample(10.8)).value)
        if values[-1] == 2:
            break
        await asyncio.sleep(0.05)
    assert set(values) <= {1.0, 2.0}
    assert values[-1] == 2
    assert _jsz_served(nats_server) - served0 == 1
    await first.aclose()
    await second.aclose()


async def test_a_push_wake_up_is_answered_by_a_fresh_snapshot(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    """An object woken by a message must not read a snapshot fetched before the message (the
    lag would be 0 and the wake-up wasted): its next sample makes a new GET even within the
    0.5 s another object's answer is shared for."""
    pushed = _for(nats_server, queue, pool, "monitoring", natsServer=nats_server.url)
    other = _for(nats_server, queue, pool, "monitoring")
    assert (await other.sample(50.0)).value == 0  # the snapshot, fetched before the message
    wakeups = pushed.wakeups()
    try:
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed
        await queue.publish(4)
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # the message's wake-up
        served0 = _jsz_served(nats_server)
        assert (await pushed.sample(50.1)).value == 4
        assert _jsz_served(nats_server) == served0 + 1
        assert (await other.sample(50.2)).value == 4  # the woken object's answer is shared
        assert _jsz_served(nats_server) == served0 + 1
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]
    await pushed.aclose()
    await other.aclose()


async def test_client_mode_shares_one_connection(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    scalers = [_for(nats_server, queue, pool, "client") for _ in range(5)]
    await queue.publish(2)
    samples = await asyncio.gather(*(s.sample(1.0) for s in scalers))
    assert {s.value for s in samples} == {2.0}
    assert len(pool) == 1
    for s in scalers:
        await s.aclose()
    assert len(pool) == 0


async def _recovered(scaler: NatsJetStreamScaler) -> float:
    """Sample until the source answers again (nats-py reconnects in the background)."""
    last: Exception | None = None
    for _ in range(60):
        try:
            return (await scaler.sample(5.0)).value
        except ScalerError as exc:
            last = exc
            await asyncio.sleep(0.25)
    raise AssertionError(f"no recovery: {last}")


@pytest.mark.parametrize("mode", MODES)
async def test_server_down_raises_then_recovers(
    nats_factory: Callable[[], NatsServer], pool: ClientPool, mode: str
) -> None:
    server = nats_factory()
    q = await _queue(server.url)
    await q.publish(3)
    await q.nc.close()
    scaler = _for(server, q, pool, mode, timeout=1.0)
    assert (await scaler.sample(1.0)).value == 3

    server.kill()
    for _ in range(2):  # every sample while it is down raises; none reads as 0
        with pytest.raises(ScalerError):
            await scaler.sample(2.0)

    server.start()  # same ports, same JetStream store
    assert await _recovered(scaler) == 3
    await scaler.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_nothing_listening_is_an_error(pool: ClientPool, mode: str) -> None:
    port = free_port()  # nothing listens there
    scaler = _scaler(
        pool,
        mode,
        monitoring=f"127.0.0.1:{port}",
        url=f"nats://127.0.0.1:{port}",
        stream="S",
        consumer="c",
        timeout=1.0,
    )
    for _ in range(2):  # and again: a failed connection is not cached
        with pytest.raises(ScalerError):
            await scaler.sample(1.0)
    await scaler.aclose()
    assert len(pool) == 0


# Bounds a wait for an item that must come; a hang guard, never a measured speed. A message
# published after the first item reaches the live subscription at once; one published before the
# server had the SUB is lost for good, so the wait would run out whatever its length.
PUSH_GUARD = 10.0


async def test_push_first_item_means_subscribed(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    """`wakeups()` yields once when the server has the subscription (SUB, then the flush's
    PONG), before any message: one publish right after that first item wakes the next. (Before,
    the first item was the first message's, and the core reported the subscription up before
    it existed.)"""
    scaler = _for(nats_server, queue, pool, "client")
    wakeups = scaler.wakeups()
    try:
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed; nothing was published
        await queue.publish(1)
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]
    await scaler.aclose()
    assert len(pool) == 0


async def test_push_first_item_comes_after_a_ping_sent_behind_the_subs(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    """The server answers a PING only after what came before it on the connection, so the first
    item means "subscribed" only if a PING it waited for was written after every SUB. nats-py's
    flush writes its PING straight to the socket while a SUB still waits in nats-py's buffer for
    its flusher task: PING then SUB went out, and a message published right after the first item
    could be lost (one CI run: no wake-up within 10 s). A recording proxy shows the wire order."""
    recording = await asyncio.to_thread(
        FaultProxy((nats_server.host, nats_server.port), record=True).start
    )
    try:
        scaler = _scaler(
            pool,
            "client",
            monitoring=nats_server.monitoring,
            url=f"nats://{recording.address}",
            stream=queue.stream,
            consumer=queue.consumer,
        )
        wakeups = scaler.wakeups()
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed
        wire = recording.sent()
        await wakeups.aclose()  # type: ignore[attr-defined]
        await scaler.aclose()
    finally:
        await asyncio.to_thread(recording.stop)
    subscribed = wire.rindex(b"SUB " + queue.stream.encode())
    assert wire.find(b"PING", subscribed) > subscribed, wire


async def test_push_wakes_on_publish_and_raises_when_the_connection_drops(
    nats_factory: Callable[[], NatsServer], pool: ClientPool
) -> None:
    server = nats_factory()
    q = await _queue(server.url)
    scaler = _for(server, q, pool, "client", timeout=1.0)
    wakeups = scaler.wakeups()
    await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed
    await q.publish(1)
    await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # the message's wake-up
    await q.nc.close()

    server.kill()
    with pytest.raises(ScalerError, match="connection lost"):
        await _drain(wakeups)
    await wakeups.aclose()  # type: ignore[attr-defined]
    await scaler.aclose()


async def test_push_is_not_reported_subscribed_while_the_shared_connection_reconnects(
    nats_factory: Callable[[], NatsServer], pool: ClientPool
) -> None:
    """The server is down and nats-py is reconnecting the connection another scaler holds:
    meanwhile its subscribe() and flush() return at once without a server behind them, and the
    first item ("subscribed") used to come anyway (the core would count push up with nothing
    listening). The aws-s3 trigger's bucket events subscribe this way (`subject_wakeups`)."""
    server = nats_factory()
    q = await _queue(server.url)
    await q.nc.close()
    holder = _for(server, q, pool, "client", timeout=1.0)
    held = holder.wakeups()
    await asyncio.wait_for(anext(held), PUSH_GUARD)  # the shared connection is up
    server.kill()
    with pytest.raises(ScalerError, match="connection lost"):  # the drop was noticed
        await asyncio.wait_for(_drain(held), PUSH_GUARD)
    target = NatsTarget(server.url, timeout=1.0)
    assert pool.refs(target.key) == 1  # the holder's connection, reconnecting in the background

    events = subject_wakeups(target, [f"{q.stream}.>"], pool)
    with pytest.raises(ScalerError, match="not connected"):
        await asyncio.wait_for(anext(events), PUSH_GUARD)
    await events.aclose()
    await held.aclose()  # type: ignore[attr-defined]
    await holder.aclose()
    assert len(pool) == 0


async def _drain(wakeups: AsyncIterator[None]) -> None:
    """Consume wake-ups (those queued before the drop) until the iterator raises or ends."""
    async for _ in wakeups:
        pass


async def test_monitoring_only_has_no_push(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    scaler = _for(nats_server, queue, pool, "monitoring")
    with pytest.raises(ScalerError, match="natsServer"):
        await anext(scaler.wakeups())


async def test_monitoring_sampling_with_push_from_nats_server(
    nats_server: NatsServer, queue: Queue, pool: ClientPool
) -> None:
    scaler = _for(nats_server, queue, pool, "monitoring", natsServer=nats_server.url)
    wakeups = scaler.wakeups()
    await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed
    await queue.publish(1)
    await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # the message's wake-up
    assert (await scaler.sample(1.0)).value == 1
    await wakeups.aclose()  # type: ignore[attr-defined]
    await scaler.aclose()


# -- credentials -------------------------------------------------------------------------------


@pytest.fixture
def nats_with_password(run_dir: Path) -> Iterator[str]:
    """A private nats-server requiring user `tidal` / password `s3cret-pw` (client mode only)."""
    port, monitoring = free_port(), free_port()
    name = _name("nats-auth-")
    argv = [nats_server_bin(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitoring)]
    argv += ["-js", "-sd", str(run_dir / name), "--user", "tidal", "--pass", "s3cret-pw"]
    proc = ManagedProcess(name, argv, run_dir, ready=lambda: tcp_open(port), timeout=30)
    proc.start()
    yield f"nats://127.0.0.1:{port}"
    proc.stop()


async def test_client_mode_credentials_from_trigger_authentication(
    nats_with_password: str, pool: ClientPool
) -> None:
    nc = await nats.connect(nats_with_password, user="tidal", password="s3cret-pw")
    js = nc.jetstream()
    await js.add_stream(name="AUTHED", subjects=["authed.>"])
    await js.add_consumer("AUTHED", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT))
    await js.publish("authed.x", b"1")
    await nc.close()

    def make(password: str) -> NatsJetStreamScaler:
        auth = {"username": "tidal", "password": password}
        return _scaler(
            pool,
            "client",
            monitoring="",
            url=nats_with_password,
            stream="AUTHED",
            consumer="w",
            auth=auth,
        )

    scaler = make("s3cret-pw")
    assert (await scaler.sample(1.0)).value == 1
    await scaler.aclose()

    bad = make("wrong-pw")
    with pytest.raises(ScalerError) as info:
        await bad.sample(1.0)
    assert "wrong-pw" not in str(info.value)
    await bad.aclose()


# -- a 3-node cluster --------------------------------------------------------------------------


@dataclass
class Cluster:
    monitoring: list[str]  # each node's monitoring host:port, node n<i+1> at index i
    url: str  # client URL of node n1


@pytest.fixture
def nats_cluster(run_dir: Path) -> Iterator[Cluster]:
    """Three clustered nats-servers on 127.0.0.1, .2 and .3 sharing one set of ports, as pods
    do in Kubernetes: KEDA's leader discovery (each /varz connect_urls host + the seed's
    monitoring port) then works unchanged on loopback."""
    client, monitoring, route = free_port(), free_port(), free_port()
    hosts = [f"127.0.0.{n}" for n in (1, 2, 3)]
    for host in hosts:
        for port in (client, monitoring, route):
            assert not tcp_open(port, host), f"{host}:{port} is in use"
    routes = ",".join(f"nats://{h}:{route}" for h in hosts)
    tag = _name("")
    procs: list[ManagedProcess] = []
    for n, host in enumerate(hosts, 1):
        name = f"nats-cluster-{tag}-n{n}"
        argv = [nats_server_bin(), "-a", host, "-p", str(client), "-m", str(monitoring)]
        argv += ["-js", "-sd", str(run_dir / name), "-n", f"n{n}", "--cluster_name", "c"]
        argv += ["--cluster", f"nats://{host}:{route}", "--routes", routes]
        procs.append(ManagedProcess(name, argv, run_dir, ready=_port_ready(host, monitoring)))
    try:
        for proc in procs:
            proc.start()
        yield Cluster([f"{h}:{monitoring}" for h in hosts], f"nats://127.0.0.1:{client}")
    finally:
        for proc in procs:
            proc.stop()


def _port_ready(host: str, port: int) -> Callable[[], bool]:
    return lambda: tcp_open(port, host)


async def _retry(action: Callable[[], Awaitable[T]]) -> T:
    """`action()` once the cluster can serve it (its meta leader is elected after start)."""
    for _ in range(100):
        try:
            return await action()
        except nats.errors.Error:
            await asyncio.sleep(0.2)
    return await action()


async def test_cluster_reads_each_consumer_from_its_leader(
    nats_cluster: Cluster, pool: ClientPool
) -> None:
    nc = await nats.connect(nats_cluster.url)
    js = nc.jetstream()
    await _retry(lambda: js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3))
    config = ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT)
    await _retry(lambda: js.add_consumer("R3", config))
    for _ in range(7):
        await js.publish("r3.x", b"1")
    sub = await js.pull_subscribe("r3.>", durable="w", stream="R3")
    delivered = await sub.fetch(3, timeout=5)
    await delivered[0].ack_sync()  # lag 4 pending + 2 ack-pending = 6

    info = await js.consumer_info("R3", "w")
    assert info.cluster is not None
    assert info.cluster.leader
    leader = int(info.cluster.leader.removeprefix("n")) - 1
    follower = nats_cluster.monitoring[(leader + 1) % 3]  # followers report num_pending 0

    def make(**meta: str) -> NatsJetStreamScaler:
        trigger = TriggerContext(
            "ns", "so", 0, "nats-jetstream", "", {"stream": "R3", "consumer": "w", **meta}
        )
        scaler = build_scaler(trigger, pool)
        assert isinstance(scaler, NatsJetStreamScaler)
        return scaler

    monitoring = make(natsServerMonitoringEndpoint=follower, account="$G")
    client = make(natsServer=nats_cluster.url)
    first, second = await monitoring.sample(1.0), await client.sample(1.0)
    assert first.value == second.value == 6
    poller = monitoring.poller
    assert poller is not None
    assert poller.varz_requests >= 1

    before = (poller.jsz_requests, poller.varz_requests)
    assert (await monitoring.sample(2.0)).value == 6
    assert (poller.jsz_requests, poller.varz_requests) == (before[0] + 1, before[1])  # leader only

    # Move the consumer's leadership: the poller follows it without a new discovery.
    await nc.request("$JS.API.CONSUMER.LEADER.STEPDOWN.R3.w", b"", timeout=5)
    for _ in range(50):
        moved = await _retry(lambda: js.consumer_info("R3", "w"))
        if moved.cluster and moved.cluster.leader not in ("", info.cluster.leader):
            break
        await asyncio.sleep(0.1)
    await js.publish("r3.x", b"1")
    after, direct = await monitoring.sample(3.0), await client.sample(3.0)
    assert after.value == direct.value == 7
    await monitoring.aclose()
    await client.aclose()
    await nc.close()
