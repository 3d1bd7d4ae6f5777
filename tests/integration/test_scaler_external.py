"""The `external` and `external-push` triggers against a real gRPC server: an ExternalScaler
(KEDA's externalscaler.proto) served by grpc.aio on 127.0.0.1 by this test, in plaintext and
over TLS with a test CA (and client certificates), as the HTTP add-on's scaler serves it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import yaml

from localenv.certs import LOOPBACK_IPS, CertKey, issue, new_ca
from localenv.process import free_port
from scaler.clients import ClientPool
from scaler.contract import PushScaler, TriggerContext
from scaler.errors import ConfigError, KubeError, QueryError, ScalerError
from scaler.object_parser import read_scaled_object
from scaler.objects import Trigger, trigger_context
from scaler.push import push_loop
from scaler.registry import default_registry
from scaler.runtime import TriggerRuntime
from scaler.telemetry import Telemetry
from scalers.external import externalscaler_pb2 as pb
from scalers.external import scaler as external_scaler
from scalers.external.scaler import (
    ExternalPushScaler,
    ExternalScaler,
    endpoint_of,
    scaler_metadata,
)

GUARD = 20.0  # a hang guard for what must happen; never a measured speed
TIMEOUT = 1.0  # the triggers' call timeout (KEDA's global HTTP timeout is 3 s)


@dataclass
class ScalerState:
    """What the served ExternalScaler answers, and what it was asked."""

    metric: str = "queue"
    target: float = 10.0
    target_int: int = 0
    specs: int = 1
    values: list[tuple[int, float]] = field(default_factory=lambda: [(0, 7.0)])
    active: bool = True
    hang: bool = False  # unary calls never answer
    fail_spec: bool = False
    refs: list[pb.ScaledObjectRef] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    streams: list[asyncio.Queue[bool | None]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, result: bool | None) -> None:
        """Send `result` on every open StreamIsActive stream (None ends the stream)."""
        for queue in self.streams:
            queue.put_nowait(result)


def _handlers(state: ScalerState) -> grpc.GenericRpcHandler:
    async def hang_if_asked() -> None:
        if state.hang:
            await asyncio.Event().wait()

    async def is_active(ref: pb.ScaledObjectRef, ctx: Any) -> pb.IsActiveResponse:
        state.refs.append(ref)
        await hang_if_asked()
        return pb.IsActiveResponse(result=state.active)

    async def get_metric_spec(ref: pb.ScaledObjectRef, ctx: Any) -> pb.GetMetricSpecResponse:
        state.refs.append(ref)
        await hang_if_asked()
        if state.fail_spec:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such route")
        one = pb.MetricSpec(
            metricName=state.metric, targetSize=state.target_int, targetSizeFloat=state.target
        )
        extra = [pb.MetricSpec(metricName=f"other{i}", targetSize=1) for i in range(state.specs)]
        return pb.GetMetricSpecResponse(metricSpecs=[one, *extra[1:]] if state.specs else [])

    async def get_metrics(req: pb.GetMetricsRequest, ctx: Any) -> pb.GetMetricsResponse:
        state.refs.append(req.scaledObjectRef)
        state.asked.append(req.metricName)
        await hang_if_asked()
        return pb.GetMetricsResponse(
            metricValues=[
                pb.MetricValue(metricName=req.metricName, metricValue=i, metricValueFloat=f)
                for i, f in state.values
            ]
        )

    async def stream_is_active(
        ref: pb.ScaledObjectRef, ctx: Any
    ) -> AsyncIterator[pb.IsActiveResponse]:
        state.refs.append(ref)
        queue: asyncio.Queue[bool | None] = asyncio.Queue()
        state.streams.append(queue)
        await ctx.send_initial_metadata(())
        state.opened.set()
        try:
            while (result := await queue.get()) is not None:
                yield pb.IsActiveResponse(result=result)
        finally:
            state.streams.remove(queue)

    def unary(fn: Callable[..., Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        "externalscaler.ExternalScaler",
        {
            "IsActive": unary(is_active, pb.ScaledObjectRef, pb.IsActiveResponse),
            "GetMetricSpec": unary(get_metric_spec, pb.ScaledObjectRef, pb.GetMetricSpecResponse),
            "GetMetrics": unary(get_metrics, pb.GetMetricsRequest, pb.GetMetricsResponse),
            "StreamIsActive": grpc.unary_stream_rpc_method_handler(
                stream_is_active,
                request_deserializer=pb.ScaledObjectRef.FromString,
                response_serializer=pb.IsActiveResponse.SerializeToString,
            ),
        },
    )


@dataclass
class Pki:
    ca: CertKey
    server: CertKey
    client: CertKey
    other_ca: CertKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = new_ca("tidal-test-external-ca")
    server = issue(ca, "external-scaler", ip_addresses=LOOPBACK_IPS, server=True)
    client = issue(ca, "tidal", client=True)
    return Pki(ca, server, client, new_ca("someone-else"))


class Server:
    """A real gRPC ExternalScaler on 127.0.0.1 (restartable on the same port)."""

    def __init__(self, state: ScalerState, tls: Pki | None = None, mtls: bool = False) -> None:
        self.state = state
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._tls = tls
        self._mtls = mtls
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(self.state),))
        if self._tls is None:
            server.add_insecure_port(self.address)
        else:
            creds = grpc.ssl_server_credentials(
                [(self._tls.server.key_pem, self._tls.server.cert_pem)],
                root_certificates=self._tls.ca.cert_pem if self._mtls else None,
                require_client_auth=self._mtls,
            )
            server.add_secure_port(self.address, creds)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            self.state.push(None)
            await self._server.stop(grace=None)
            self._server = None


@pytest.fixture(autouse=True)
def _forget_silent_scalers() -> Iterator[None]:
    """Ports are reused across tests: a timed-out scaler of one test is not another's."""
    yield
    external_scaler._SILENT.clear()


@pytest.fixture
async def state() -> ScalerState:
    return ScalerState()


@pytest.fixture
async def server(state: ScalerState) -> AsyncIterator[Server]:
    srv = Server(state)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    clients = ClientPool()
    yield clients
    await clients.aclose()


def _trigger(
    address: str,
    *,
    kind: str = "external",
    index: int = 0,
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    metric_type: Any = "AverageValue",
    **meta: str,
) -> TriggerContext:
    return TriggerContext(
        "apps",
        "orders",
        index,
        kind,
        "",
        {"scalerAddress": address, **meta},
        metric_type=metric_type,
        auth_params=auth or {},
        resolved_env=env or {},
        timeout=TIMEOUT,
    )


def _build(pool: ClientPool, trigger: TriggerContext) -> ExternalScaler:
    scaler = default_registry().build(trigger, pool)
    assert isinstance(scaler, ExternalScaler)
    return scaler


async def _ready(scaler: ExternalScaler) -> ExternalScaler:
    await scaler.prepare()
    return scaler


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("values", "active", "expected"),
    [
        pytest.param([(0, 7.5)], True, 7.5, id="float-value-active"),
        pytest.param([(12, 0.0)], False, 12.0, id="int-value-when-float-is-0"),
        pytest.param([(3, 4.25)], True, 4.25, id="float-wins-over-int"),
        pytest.param([(0, 2.0), (5, 0.0)], True, 7.0, id="values-summed"),
        pytest.param([(0, 0.0)], True, 0.0, id="zero-but-active-from-IsActive"),
    ],
)
async def test_value_and_activity(
    server: Server,
    state: ScalerState,
    pool: ClientPool,
    values: list[tuple[int, float]],
    active: bool,
    expected: float,
) -> None:
    state.values, state.active = values, active
    scaler = await _ready(_build(pool, _trigger(server.address)))
    sample = await scaler.sample(1000.0)
    assert (sample.value, sample.active, sample.observed_at) == (expected, active, 1000.0)
    assert state.asked == ["queue"]  # without the s0- prefix
    await scaler.aclose()


async def test_no_metric_value_is_an_error_not_a_zero(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    state.values = []
    scaler = await _ready(_build(pool, _trigger(server.address)))
    with pytest.raises(QueryError, match="GetMetrics returned no value"):
        await scaler.sample(1.0)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("metric", "index", "target", "target_int", "metric_type", "name", "asked", "expected"),
    [
        pytest.param("queue", 0, 10.0, 0, "AverageValue", "s0-queue", "queue", 10.0, id="float"),
        pytest.param("queue", 2, 0.0, 25, "Value", "s2-queue", "queue", 25.0, id="int-target"),
        pytest.param("q", 1, 0.5, 3, "AverageValue", "s1-q", "q", 0.5, id="float-over-int"),
        pytest.param(
            "http.requests/s:x",
            0,
            100.0,
            0,
            "AverageValue",
            "s0-http-requests-s-x",
            "http-requests-s-x",
            100.0,
            id="normalized-like-keda",
        ),
    ],
)
async def test_metric_name_and_target_as_keda(
    server: Server,
    state: ScalerState,
    pool: ClientPool,
    metric: str,
    index: int,
    target: float,
    target_int: int,
    metric_type: str,
    name: str,
    asked: str,
    expected: float,
) -> None:
    state.metric, state.target, state.target_int = metric, target, target_int
    scaler = await _ready(
        _build(pool, _trigger(server.address, index=index, metric_type=metric_type))
    )
    spec = scaler.metric_spec()
    assert (spec.name, spec.target, spec.target_type, spec.kind) == (
        name,
        expected,
        metric_type,
        "External",
    )
    await scaler.sample(1.0)
    assert state.asked == [asked]  # KEDA strips "s<i>-" from the normalized name
    await scaler.aclose()


class ThreadedServer:
    """A `Server` on an event loop of its own thread: for callers whose loop blocks
    (metric_spec() without prepare()) and for the daemon's e2e test. Change its answers and
    push with `call` (its state belongs to the server's loop)."""

    def __init__(self, state: ScalerState, tls: Pki | None = None, mtls: bool = False) -> None:
        self.state = state
        self.server = Server(state, tls, mtls)
        self.address = self.server.address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the server's loop and wait for it."""

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(GUARD)

    def push(self, result: bool | None) -> None:
        self.call(lambda: self.state.push(result))

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(GUARD)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(GUARD)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(GUARD)
        self._loop.close()


async def test_metric_spec_without_prepare_asks_the_scaler(pool: ClientPool) -> None:
    """The core as it is today calls metric_spec() synchronously after building."""
    with ThreadedServer(ScalerState(metric="jobs", target=4.0)) as srv:
        scaler = _build(pool, _trigger(srv.address, index=1))
        spec = scaler.metric_spec()
        assert (spec.name, spec.target) == ("s1-jobs", 4.0)
        assert len(pool) == 0  # its own short-lived channel, not the shared one
        await scaler.aclose()


async def test_several_metric_specs_use_the_first(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    state.specs = 3
    scaler = await _ready(_build(pool, _trigger(server.address)))
    assert scaler.metric_spec().name == "s0-queue"
    await scaler.aclose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"specs": 0}, "returned no metric spec", id="no-spec"),
        pytest.param({"target": 0.0, "target_int": 0}, "needs a target above 0", id="zero"),
        pytest.param({"fail_spec": True}, "GetMetricSpec failed: NOT_FOUND", id="grpc-error"),
    ],
)
async def test_metric_spec_failure_is_a_clear_error(
    server: Server, state: ScalerState, pool: ClientPool, change: dict[str, Any], message: str
) -> None:
    for key, value in change.items():
        setattr(state, key, value)
    scaler = _build(pool, _trigger(server.address))
    with pytest.raises(ScalerError, match=message):
        await scaler.prepare()
    await scaler.aclose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"specs": 0}, "returned no metric spec", id="no-spec"),
        pytest.param({"fail_spec": True}, "GetMetricSpec failed: NOT_FOUND", id="grpc-error"),
    ],
)
async def test_metric_spec_failure_while_building_is_retried_by_the_core(
    pool: ClientPool, change: dict[str, Any], message: str
) -> None:
    """The synchronous path raises a KubeError: today's builder reports that as Ready=False
    and builds again at the next poll (a ConfigError would block the object until edited)."""
    with ThreadedServer(ScalerState(**change)) as srv:
        scaler = _build(pool, _trigger(srv.address))
        with pytest.raises(KubeError, match=message):
            scaler.metric_spec()
        await scaler.aclose()


# ---------------------------------------------------------------------------- metadata


async def test_metadata_passed_through_as_keda(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    trigger = _trigger(
        server.address,
        env={"ROUTE": "orders-route", "EMPTY": ""},
        interceptorRoute="orders",
        hostFromEnv="ROUTE",
        emptyFromEnv="EMPTY",
        missingFromEnv="NOPE",
        enableTLS="false",
    )
    scaler = await _ready(_build(pool, trigger))
    await scaler.sample(1.0)
    assert state.refs
    for ref in state.refs:
        assert (ref.name, ref.namespace) == ("orders", "apps")
        assert dict(ref.scalerMetadata) == {
            "scalerAddress": server.address,
            "interceptorRoute": "orders",
            "hostFromEnv": "orders-route",  # the key keeps its name, as KEDA sends it
            "enableTLS": "false",
        }
    await scaler.aclose()


def test_scaler_specific_keys_are_not_unknown() -> None:
    prepared = default_registry().prepare(
        _trigger("127.0.0.1:9090", kind="external-push", interceptorRoute="r", anything="x")
    )
    assert prepared.config.unknown_keys == ()


@pytest.mark.parametrize(
    ("meta", "auth", "message"),
    [
        pytest.param({"scalerAddress": ""}, {}, "scalerAddress", id="address-missing"),
        pytest.param({"scalerAddress": "no-port"}, {}, "is not host:port", id="no-port"),
        pytest.param({}, {"tlsClientCert": "x"}, "given together", id="cert-without-key"),
        pytest.param({}, {"caCert": "not a pem"}, "CA certificate", id="bad-ca"),
        pytest.param({}, {"caCert": "\x80"}, "CA certificate does not load", id="non-ascii-ca"),
        pytest.param({"enableTLS": "maybe"}, {}, "enableTLS", id="bad-bool"),
    ],
)
def test_bad_parameters_are_config_errors(
    meta: dict[str, str], auth: dict[str, str], message: str
) -> None:
    trigger = _trigger("127.0.0.1:9090", auth=auth)
    trigger = TriggerContext(
        trigger.namespace,
        trigger.object_name,
        0,
        "external",
        "",
        {**trigger.metadata, **meta},
        auth_params=auth,
    )
    with pytest.raises(ConfigError, match=message):
        default_registry().prepare(trigger)


# ---------------------------------------------------------------------------- channels


async def test_one_channel_per_address_and_tls(
    server: Server, state: ScalerState, pool: ClientPool, pki: Pki
) -> None:
    a = await _ready(_build(pool, _trigger(server.address, interceptorRoute="a")))
    b = await _ready(_build(pool, _trigger(server.address, interceptorRoute="b", index=1)))
    await a.sample(1.0)
    await b.sample(1.0)
    assert len(pool) == 1
    tls = _build(pool, _trigger(server.address, auth={"caCert": pki.ca.cert_pem.decode()}))
    with pytest.raises(ScalerError):  # a TLS client against a plaintext server
        await tls.prepare()
    assert len(pool) == 2  # other TLS settings: another channel
    for scaler in (a, b, tls):
        await scaler.aclose()
    assert len(pool) == 0


# ---------------------------------------------------------------------------- TLS


@pytest.mark.parametrize(
    ("mtls", "auth", "meta", "works"),
    [
        pytest.param(False, {"caCert": "ca"}, {}, True, id="ca-cert"),
        pytest.param(False, {"caCert": "ca"}, {"enableTLS": "true"}, True, id="ca-and-enable"),
        pytest.param(True, {"caCert": "ca", "client": "1"}, {}, True, id="client-cert"),
        pytest.param(True, {"caCert": "ca"}, {}, False, id="client-cert-missing"),
        pytest.param(False, {"caCert": "other"}, {}, False, id="untrusted-ca"),
        pytest.param(False, {}, {"enableTLS": "true"}, False, id="system-roots-untrusted"),
        pytest.param(False, {}, {"enableTLS": "true", "unsafeSsl": "true"}, True, id="unsafe"),
        pytest.param(False, {}, {}, False, id="plaintext-to-tls-server"),
    ],
)
async def test_tls(
    pki: Pki,
    pool: ClientPool,
    mtls: bool,
    auth: dict[str, str],
    meta: dict[str, str],
    works: bool,
) -> None:
    state = ScalerState(values=[(0, 3.0)])
    srv = Server(state, tls=pki, mtls=mtls)
    await srv.start()
    try:
        params: dict[str, str] = {}
        if "caCert" in auth:
            ca = pki.ca if auth["caCert"] == "ca" else pki.other_ca
            params["caCert"] = ca.cert_pem.decode()
        if "client" in auth:
            params["tlsClientCert"] = pki.client.cert_pem.decode()
            params["tlsClientKey"] = pki.client.key_pem.decode()
        scaler = _build(pool, _trigger(srv.address, auth=params, **meta))
        if works:
            await scaler.prepare()
            sample = await scaler.sample(1.0)
            assert (sample.value, sample.active) == (3.0, True)
        else:
            with pytest.raises(ScalerError, match="GetMetricSpec failed: UNAVAILABLE"):
                await scaler.prepare()
            assert state.refs == []  # nothing reached the scaler
        await scaler.aclose()
    finally:
        await srv.stop()


# ---------------------------------------------------------------------------- failures


async def test_server_down_is_an_error(pool: ClientPool) -> None:
    scaler = _build(pool, _trigger(f"127.0.0.1:{free_port()}"))
    with pytest.raises(ScalerError, match="UNAVAILABLE"):
        await scaler.prepare()
    with pytest.raises(ScalerError, match="UNAVAILABLE"):
        await scaler.sample(1.0)
    await scaler.aclose()


@contextlib.asynccontextmanager
async def _silent_acceptor() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never reads or answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_server_that_accepts_and_never_answers_is_an_error(pool: ClientPool) -> None:
    async with _silent_acceptor() as address:
        scaler = _build(pool, _trigger(address))
        async with asyncio.timeout(GUARD):
            with pytest.raises(ScalerError, match="GetMetricSpec failed: DEADLINE_EXCEEDED"):
                await scaler.prepare()
            with pytest.raises((ScalerError, KubeError), match=r"DEADLINE_EXCEEDED|in time"):
                scaler.metric_spec()
        await scaler.aclose()


async def test_a_silent_scaler_holds_one_build_not_every_build(pool: ClientPool) -> None:
    """The synchronous spec path blocks the daemon's loop: after one call to a scaler timed
    out, the builds of its other objects fail at once instead of waiting again."""
    async with _silent_acceptor() as address:
        first, second = _build(pool, _trigger(address)), _build(pool, _trigger(address, index=1))
        with pytest.raises(KubeError, match="DEADLINE_EXCEEDED"):
            first.metric_spec()
        with pytest.raises(KubeError, match="not asked again yet"):
            second.metric_spec()
        with pytest.raises(ScalerError, match="DEADLINE_EXCEEDED"):  # prepare() still asks
            await second.prepare()
        for scaler in (first, second):
            await scaler.aclose()


async def test_scaler_that_hangs_mid_call_is_an_error(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    scaler = await _ready(_build(pool, _trigger(server.address)))
    state.hang = True
    async with asyncio.timeout(GUARD):
        with pytest.raises(ScalerError, match="DEADLINE_EXCEEDED"):
            await scaler.sample(1.0)
    state.hang = False
    assert (await scaler.sample(2.0)).value == 7.0  # the shared channel still works
    await scaler.aclose()


# ---------------------------------------------------------------------------- push


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def _push(pool: ClientPool, address: str) -> ExternalPushScaler:
    scaler = _build(pool, _trigger(address, kind="external-push", interceptorRoute="orders"))
    assert isinstance(scaler, ExternalPushScaler)
    assert isinstance(scaler, PushScaler)
    return scaler


def test_external_is_not_a_push_source(pool: ClientPool) -> None:
    scaler = _build(pool, _trigger("127.0.0.1:9"))
    assert not callable(getattr(scaler, "wakeups", None))


async def test_push_first_item_means_subscribed_then_true_wakes(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    scaler = _push(pool, server.address)
    stream = scaler.wakeups()
    async with asyncio.timeout(GUARD):
        await anext(stream)  # subscribed: the server holds the stream
        assert len(state.streams) == 1
        assert dict(state.refs[-1].scalerMetadata)["interceptorRoute"] == "orders"
        for result in (False, True, True, False, True):
            state.push(result)
        await anext(stream)  # the first true
        await anext(stream)  # the true after a false; the repeated true woke nothing
        state.push(None)  # the server ends the stream
        with pytest.raises(ScalerError, match="StreamIsActive ended"):
            await anext(stream)
    await scaler.aclose()


async def test_push_stream_to_a_down_server_raises(pool: ClientPool) -> None:
    scaler = _push(pool, f"127.0.0.1:{free_port()}")
    async with asyncio.timeout(GUARD):
        with pytest.raises(ScalerError, match="StreamIsActive failed: UNAVAILABLE"):
            await anext(scaler.wakeups())
    await scaler.aclose()


async def test_push_reconnects_after_the_server_restarts(
    server: Server, state: ScalerState, pool: ClientPool
) -> None:
    """Through the core's push loop: the stream breaks when the server stops, the loop retries
    with backoff, and a true from the restarted server wakes the object again."""
    scaler = _push(pool, server.address)
    await scaler.prepare()
    telemetry = Telemetry()
    woken: list[tuple[str, str]] = []
    trig = TriggerRuntime(Trigger(0, "external-push"), scaler.metric_spec(), scaler)
    labels = {"namespace": "apps", "scaledObject": "orders", "triggerIndex": "0"}

    def up() -> float | None:
        return telemetry.registry.get_sample_value("tidal_push_subscription_up", labels)

    task = asyncio.create_task(
        push_loop(("apps", "orders"), trig, wake=woken.append, telemetry=telemetry, recheck=60.0)
    )
    try:
        await _until(lambda: up() == 1.0)
        state.push(True)
        await _until(lambda: len(woken) >= 2)  # subscribed + the true
        await server.stop()
        await _until(lambda: up() == 0.0)
        state.opened.clear()
        await server.start()
        async with asyncio.timeout(GUARD):
            await state.opened.wait()  # the loop opened a new stream on its own
        await _until(lambda: up() == 1.0)
        before = len(woken)
        state.push(True)
        await _until(lambda: len(woken) >= before + 1)
        assert len(state.streams) == 1  # one stream for the object, not one per attempt
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await scaler.aclose()


# ---------------------------------------------------------------------------- generated code


def test_checked_in_modules_match_the_proto(tmp_path: Path) -> None:
    """externalscaler_pb2.py(i) are generated from externalscaler.proto (command in its
    header) and checked in; a fresh generation with the pinned grpcio-tools is identical."""
    from grpc_tools import protoc  # the dev extra; not needed at run time

    here = Path(pb.__file__).parent
    args = [
        "protoc",
        f"-I{here}",
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        str(here / "externalscaler.proto"),
    ]
    assert protoc.main(args) == 0
    for name in ("externalscaler_pb2.py", "externalscaler_pb2.pyi"):
        assert (tmp_path / name).read_text() == (here / name).read_text(), name


# ---------------------------------------------------------------------------- KEDA's examples

# KEDA's documented examples (keda.sh docs, scalers/external and scalers/external-push; the
# HTTP add-on's ScaledObject), as written. Only the Secret's data is ours: the docs leave
# placeholders ("YOUR_CA_IN_SECRET") where a user puts real certificates.
KEDA_EXTERNAL = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: external-scaledobject
spec:
  scaleTargetRef:
    name: keda-redis-node
  triggers:
  - type: external
    metadata:
      scalerAddress: redis-external-scaler-service:8080
      address: REDIS_HOST
      password: REDIS_PASSWORD
      listName: mylist
      listLength: "5"
"""

KEDA_EXTERNAL_TLS = """
apiVersion: v1
kind: Secret
metadata:
  name: certificate
data:
  ca.crt: "{ca}"
  tls.crt: "{cert}"
  tls.key: "{key}"
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth
spec:
  secretTargetRef:
  - parameter: caCert
    name: certificate
    key: ca.crt
  - parameter: tlsClientCert
    name: certificate
    key: tls.crt
  - parameter: tlsClientKey
    name: certificate
    key: tls.key
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: external-scaledobject
spec:
  scaleTargetRef:
    name: keda-redis-node
  triggers:
  - type: external
    metadata:
      scalerAddress: redis-external-scaler-service:8080
      metricType: mymetric
      scalerAddress: mydomain.com:443
      extraKey: "demo"
    authenticationRef:
      name: keda-trigger-auth
"""

KEDA_EXTERNAL_PUSH = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: name
  namespace: namespace
spec:
  scaleTargetRef:
    name: keda-node
  triggers:
  - type: external-push
    metadata:
      scalerAddress: external-scaler-service:8080
      tlsCertFile: /path/to/tls/cert.pem # optional
"""

HTTP_ADD_ON = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: myapp
spec:
  scaleTargetRef:
    name: myapp
  minReplicaCount: 0
  maxReplicaCount: 10
  triggers:
  - type: external-push
    metadata:
      scalerAddress: keda-add-ons-http-external-scaler.keda:9090
      interceptorRoute: myapp
"""


def _secret_auth(docs: list[Any], name: str) -> dict[str, str]:
    """secretTargetRef of the manifest's TriggerAuthentication, read from its Secret."""
    (auth,) = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert auth["metadata"]["name"] == name
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return {ref["parameter"]: data[ref["key"]] for ref in auth["spec"]["secretTargetRef"]}


@pytest.mark.parametrize(
    ("manifest", "tls", "client_cert"),
    [
        pytest.param(KEDA_EXTERNAL, False, False, id="external"),
        pytest.param(KEDA_EXTERNAL_TLS, True, True, id="external-with-certificates"),
        # The deprecated tlsCertFile (a path) goes to the scaler and enables nothing: KEDA
        # reads caCert/tlsClientCert/tlsClientKey from a TriggerAuthentication only.
        pytest.param(KEDA_EXTERNAL_PUSH, False, False, id="external-push"),
        pytest.param(HTTP_ADD_ON, False, False, id="http-add-on"),
    ],
)
async def test_keda_documented_examples_apply_unchanged(
    pool: ClientPool, pki: Pki, manifest: str, tls: bool, client_cert: bool
) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    text = manifest.replace("{ca}", b64(pki.ca.cert_pem))
    text = text.replace("{cert}", b64(pki.client.cert_pem)).replace(
        "{key}", b64(pki.client.key_pem)
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    (raw,) = [d for d in docs if d["kind"] == "ScaledObject"]
    so, problems = read_scaled_object({**raw, "metadata": {"namespace": "apps", **raw["metadata"]}})
    assert problems == ()
    for trig in so.triggers:
        ref = trig.authentication_ref
        auth = _secret_auth(docs, ref.name) if ref is not None else {}
        prepared = default_registry().prepare(trigger_context(so, trig, auth_params=auth))
        assert prepared.config.unknown_keys == ()
        scaler = default_registry().construct(prepared, pool)
        assert isinstance(scaler, ExternalScaler)
        assert isinstance(scaler, ExternalPushScaler) == (trig.type == "external-push")
        endpoint = endpoint_of(prepared.config)
        assert endpoint.address == trig.metadata["scalerAddress"]
        assert (endpoint.tls is not None) == tls
        if endpoint.tls is not None:
            assert endpoint.tls.verify
            assert bool(endpoint.tls.cert and endpoint.tls.key) == client_cert
        assert dict(scaler_metadata(prepared.trigger)) == dict(trig.metadata)
        await scaler.aclose()
