"""The fault-injection harness: one in-process Tidal, real brokers, faults and probes.

A *row* is one (scaler, fault) pair. It has four ScaledObjects, each with its own Deployment at
1 replica, polled every second with a 2 s cooldown:

* ``<row>`` (main): its source holds `VALUE` units of work, so its trigger is active.
* ``<row>-z`` (drained): the same connection to an EMPTY source, and
  ``paused-scale-in`` holding it at 1 replica although its trigger is inactive. Once the fault
  is on, the pause is lifted: its cooldown has long elapsed, its last good value is 0, so a
  daemon that took the fault (or the held 0) for an inactive trigger would scale it 1 → 0 on
  the next poll.
* ``<row>-q`` and ``<row>-b``: the drained trigger plus a healthy trigger on another Redis,
  idle (q: the object is inactive, Ready=False TriggerError; paused and lifted like z) or busy
  (b: the object is active, Ready=Unknown PartialTriggerError).

`run_row` checks, while the fault lasts, that no workload loses a replica, the conditions
follow README's decision table, and the metrics API (read through kube-apiserver's aggregator,
as the HPA reads it) answers an error for every failing metric and the value of every healthy
one; then clears the fault, counts the main trigger's polls until it samples again, and sees
z and q go 1 → 0 only after their trigger sampled (healthy, inactive) again.

Probes never assert wall-clock bounds beyond generous "eventually" timeouts; recovery is
counted in polls (`Daemon.objects.get(...).polls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import redis.asyncio as aioredis

from localenv.certs import CertKey, new_ca
from localenv.controlplane import ControlPlane
from localenv.faultbrokers import tls_server_context
from localenv.faultproxy import FaultProxy
from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced
from scaler.service import Service
from scaler.store import MetricRecord
from tests.e2e.harness import Cluster, deployment, scaled_object

T = TypeVar("T")

SCALERS = (
    "kafka",
    "nats-monitoring",
    "nats-client",
    "redis",
    "redis-streams",
    "redis-cluster",
    "aws-s3",
    "prometheus",
    "metrics-api",
)
FAULTS = ("stopped", "frozen", "wrong-credentials", "tls-mismatch", "slow")
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("nats-monitoring", "wrong-credentials"): (
        "the monitoring endpoint takes no credentials (KEDA's monitoring mode has none)"
    ),
    ("redis-cluster", "tls-mismatch"): (
        "cluster clients connect to every node the cluster announces; the local cluster has no "
        "TLS listeners to put a TLS front on all of them"
    ),
}

PAUSE_SCALE_IN = "autoscaling.keda.sh/paused-scale-in"
# The second trigger of the q and b companions: a list on an always-healthy Redis.
COMPANIONS = {"q": "companion-quiet", "b": "companion-busy"}
EXPECTED_READY = {
    "": "False/TriggerError",
    "z": "False/TriggerError",
    "q": "False/TriggerError",
    "b": "Unknown/PartialTriggerError",
}
POLL = 1  # pollingInterval of every row, seconds
COOLDOWN = 2  # cooldownPeriod: short, so a bug WOULD scale the workload down during a fault
HTTP_TIMEOUT = 1.0  # PollSettings.http_timeout: one query's budget
SLOW = 2.5  # seconds the slow proxy holds each chunk a server sends (> HTTP_TIMEOUT)
VALUE = 3.0  # units of work in every row's source: active, and the HPA wants one replica
COMPANION_VALUE = {"q": 0.0, "b": VALUE}  # what the healthy second trigger keeps serving
LIFTED_POLLS = 2  # polls of z and q with the pause lifted, under the fault (the first decides)
TARGET = "5"  # the triggers' HPA target
MIN_FAILED_POLLS = 3  # a fault is held for at least this many failed polls of the main trigger...
HOLD_SECONDS = COOLDOWN + POLL  # ...and this long after the first (a bug would have acted)
RECOVERY_POLLS = 2  # the trigger samples again within two polls after the fault clears
POLL_SLACK = 1  # + the poll in flight when the clear is observed
EVENTUALLY = 90.0  # generous: 2 shared cores, JVMs restarting
PROBE_EVERY = 0.25
SO_LABEL = "scaledobject.keda.sh/name"


def row_name(scaler: str, fault: str) -> str:
    return f"{scaler}-{fault}"


@dataclass
class RowResult:
    """What one row observed; `outcome` is filled in by the conftest hook from the report."""

    scaler: str
    fault: str
    outcome: str = "not run"
    detail: str = ""
    error: str = ""  # the trigger's error text during the fault (first seen)
    ready: str = ""  # Ready condition during the fault (status/reason)
    api: str = ""  # the metrics API's answer during the fault
    failed_polls: int = 0
    recover_s: float | None = None  # from the fault cleared to the first good sample
    recover_polls: int | None = None
    ready_again_s: float | None = None  # from the fault cleared to Ready=True in the API
    replicas: str = ""  # replica counts seen during the row
    companions: str = ""  # Ready of z, q and b during the fault
    drained_s: float | None = None  # fault cleared → z and q scaled 1 → 0 (legitimately)


RESULTS: dict[tuple[str, str], RowResult] = {}
# The control-plane cases (test function name → one line for the table).
CONTROL_PLANE_TESTS = (
    "test_apiserver_restart_loses_nothing_and_writes_nothing",
    "test_etcd_compaction_while_cut_off_loses_nothing",
    "test_tidal_restart_under_1000_objects_writes_nothing",
)
CONTROL_PLANE: dict[str, str] = {}
# Scalers whose rows' triggers (index 0) have push wake-ups here: Redis lists on a server with
# keyspace notifications on, Kafka's end-offset watcher, NATS client mode. (redis-streams has
# no wakeups(); the cluster nodes and the companion Redis have notifications off.)
PUSH_SCALERS = ("kafka", "nats-client", "redis")
# Their objects → seconds from the end of the rows until the push subscription of trigger 0
# was up again (None: never). Filled by the module's last test.
PUSH_BACK: dict[str, float | None] = {}


@dataclass(frozen=True)
class RowSpec:
    """One row's trigger: type, metadata (`zero`: the same for the row's empty source) and
    (secret) auth params."""

    trigger_type: str
    metadata: dict[str, str]
    auth: dict[str, str] = field(default_factory=dict)
    credential: str = "password"  # the auth param the wrong-credentials fault corrupts
    zero: dict[str, str] = field(default_factory=dict)


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity as the metrics API writes it ("3", "3500m", "1k")."""
    m = re.fullmatch(r"(-?[0-9.]+)([a-zA-Z]*)", text)
    if m is None:
        raise ValueError(f"not a quantity: {text!r}")
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
    return float(m.group(1)) * scale


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Blocking broker work off the loop: the daemon under test shares this event loop."""
    return await asyncio.to_thread(fn, *args)


class TlsMaterial:
    """A CA the triggers trust and one they don't, with server contexts for the proxies."""

    def __init__(self) -> None:
        self.trusted_ca: CertKey = new_ca("reliability-trusted-ca")
        self.other_ca: CertKey = new_ca("reliability-other-ca")
        self.trusted = tls_server_context(self.trusted_ca)
        self.untrusted = tls_server_context(self.other_ca)

    @property
    def ca_pem(self) -> str:
        return self.trusted_ca.cert_pem.decode()


class Rig:
    """One scaler's brokers and rows. Subclasses say how to reach the sources of each fault's
    row (`spec`: the busy source and the empty one), fill them (`seed`), and stop/freeze their
    broker."""

    scaler: str = ""
    # "ca": the trigger trusts `TlsMaterial.trusted_ca` and reaches its server through a TLS
    # front; the fault swaps the front's certificate for one from another CA.
    # "required": the trigger speaks plain text through a proxy; the fault makes the proxy
    # demand TLS (the server turned TLS on).
    tls_kind: Literal["ca", "required"] = "ca"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.proxies: dict[str, FaultProxy] = {}

    @property
    def faults(self) -> tuple[str, ...]:
        return tuple(f for f in FAULTS if (self.scaler, f) not in NOT_APPLICABLE)

    # -- to implement ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the brokers (blocking; runs in a thread). By default: the component, with the
        slow and tls-mismatch rows' proxies in front of its port."""
        server = self.component()
        server.start()
        for fault in ("slow", "tls-mismatch"):
            self.proxy(fault, ("127.0.0.1", server.port))

    def close(self) -> None:
        """Stop what start() started (blocking)."""
        self.component().stop()

    def spec(self, fault: str) -> RowSpec:
        raise NotImplementedError

    async def seed(self, fault: str) -> None:
        raise NotImplementedError

    def component(self) -> Any:
        """The broker process the stopped and frozen faults act on: a localenv server with
        start(), stop(), freeze() and thaw() (thaw waits until it is ready again)."""
        raise NotImplementedError

    def stop_broker(self) -> None:
        self.component().stop()

    def start_broker(self) -> None:
        self.component().start()

    def freeze_broker(self) -> None:
        self.component().freeze()

    def thaw_broker(self) -> None:
        self.component().thaw()

    # -- shared ---------------------------------------------------------------------------

    def proxy(self, fault: str, upstream: tuple[str, int]) -> FaultProxy:
        """The row's own proxy in front of `upstream` (TLS front for tls-mismatch rows)."""
        p = FaultProxy(upstream, name=f"proxy-{self.scaler}-{fault}").start()
        self.proxies[fault] = p
        if fault == "tls-mismatch" and self.tls_kind == "ca":
            p.terminate_tls(self.env.tls.trusted)
        return p

    def proxy_address(self, fault: str) -> str:
        return self.proxies[fault].address

    def tls_auth(self) -> dict[str, str]:
        """Auth params a "ca" TLS row adds (the trusted CA)."""
        return {"ca": self.env.tls.ca_pem}

    def http_url(self, fault: str, direct: str) -> tuple[str, dict[str, str]]:
        """An HTTP server's base URL for the row (through its proxy for slow and tls-mismatch,
        https for a "ca" TLS front) and the auth params that adds."""
        if fault not in ("slow", "tls-mismatch"):
            return direct, {}
        if fault == "tls-mismatch" and self.tls_kind == "ca":
            return f"https://{self.proxy_address(fault)}", self.tls_auth()
        return f"http://{self.proxy_address(fault)}", {}

    async def inject(self, fault: str) -> None:
        name = row_name(self.scaler, fault)
        if fault == "stopped":
            await in_thread(self.stop_broker)
        elif fault == "frozen":
            await in_thread(self.freeze_broker)
        elif fault == "wrong-credentials":
            spec = self.spec(fault)
            await self.env.set_secret(name, {spec.credential: f"wrong-{uuid.uuid4().hex[:8]}"})
        elif fault == "tls-mismatch":
            ctx = self.env.tls.untrusted if self.tls_kind == "ca" else self.env.tls.trusted
            await in_thread(self.proxies[fault].terminate_tls, ctx)
        elif fault == "slow":
            await in_thread(self.proxies[fault].delay, SLOW)
        else:
            raise ValueError(fault)

    async def clear(self, fault: str) -> None:
        name = row_name(self.scaler, fault)
        if fault == "stopped":
            await in_thread(self.start_broker)
        elif fault == "frozen":
            await in_thread(self.thaw_broker)
        elif fault == "wrong-credentials":
            spec = self.spec(fault)
            await self.env.set_secret(name, {spec.credential: spec.auth[spec.credential]})
        elif fault == "tls-mismatch":
            p = self.proxies[fault]
            if self.tls_kind == "ca":
                await in_thread(p.terminate_tls, self.env.tls.trusted)
            else:
                await in_thread(lambda: p.set_mode("pass", drop=True))
        elif fault == "slow":
            await in_thread(self.proxies[fault].pass_through)
        else:
            raise ValueError(fault)

    def close_proxies(self) -> None:
        for p in self.proxies.values():
            p.stop()


class Env:
    """One module's Tidal (in-process, metrics API behind the aggregator) and namespace."""

    def __init__(
        self,
        plane: ControlPlane,
        run_dir: Path,
        namespace: str,
        service: Service,
        kube: KubeClient,
        registrar: ApiServiceRegistrar,
    ) -> None:
        self.plane = plane
        self.run_dir = run_dir
        self.ns = namespace
        self.service = service
        self.kube = kube
        self.cluster = Cluster(kube, namespace)
        self.registrar = registrar
        self.tls = TlsMaterial()
        self.rigs: dict[str, Rig] = {}
        self.shared: dict[str, Any] = {}  # brokers several rigs use (redis + redis-streams)
        self._rig_locks: dict[str, asyncio.Lock] = {}
        self._started: dict[str, asyncio.Future[None]] = {}
        self._ready: set[str] = set()
        self._failed: dict[str, BaseException] = {}  # a rig whose setup failed, and why
        self._http: aiohttp.ClientSession | None = None

    @property
    def daemon(self) -> Any:
        assert self.service.daemon is not None
        return self.service.daemon

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    # -- rigs -----------------------------------------------------------------------------

    async def start_companion(self) -> None:
        """The always-healthy Redis of the companions' second trigger (quiet: empty list,
        busy: VALUE items)."""
        server = RedisServer(self.run_dir, name="rel-companion")
        self.shared["companion"] = server
        await in_thread(server.start)
        r = aioredis.from_url(server.url)
        await r.delete(COMPANIONS["q"], COMPANIONS["b"])
        await r.rpush(COMPANIONS["b"], *[str(i) for i in range(int(VALUE))])
        await r.aclose()

    def prestart(self, factories: Mapping[str, Callable[[Env], Rig]]) -> None:
        """Construct every rig and start all their brokers at once, each in a thread (the JVM,
        MinIO and Prometheus start side by side instead of one after the other)."""
        for scaler, factory in factories.items():
            if scaler not in self.rigs:
                rig = self.rigs[scaler] = factory(self)
                self._started[scaler] = asyncio.ensure_future(in_thread(rig.start))

    def has_rows(self, scaler: str) -> bool:
        """Whether the scaler's rig set up and created its rows' objects."""
        return scaler in self._ready

    async def rig(self, scaler: str, factory: Callable[[Env], Rig]) -> Rig:
        """The scaler's rig, started (brokers, seeded sources, every row's objects) once."""
        lock = self._rig_locks.setdefault(scaler, asyncio.Lock())
        async with lock:
            if scaler in self._failed:  # its other rows fail with the cause, not with a 404
                raise RuntimeError(f"the {scaler} rig failed to set up") from self._failed[scaler]
            if scaler in self._ready:
                return self.rigs[scaler]
            if scaler not in self.rigs:
                self.prestart({scaler: factory})
            rig = self.rigs[scaler]
            try:
                await self._started[scaler]
                await self._create_rows(scaler, rig)
            except Exception as exc:
                self._failed[scaler] = exc
                raise
            self._ready.add(scaler)
            return rig

    async def _create_rows(self, scaler: str, rig: Rig) -> None:
        for fault in rig.faults:
            await rig.seed(fault)
            name, spec = row_name(scaler, fault), rig.spec(fault)
            await self.create_row(name, spec)
            drained = RowSpec(spec.trigger_type, spec.zero, spec.auth, spec.credential)
            paused = {PAUSE_SCALE_IN: "true"}
            await self.create_row(f"{name}-z", drained, auth_of=name, annotations=paused)
            q, b = (self.companion_trigger(COMPANIONS[c]) for c in ("q", "b"))
            await self.create_row(f"{name}-q", drained, extra=q, auth_of=name, annotations=paused)
            await self.create_row(f"{name}-b", drained, extra=b, auth_of=name)

    def companion_trigger(self, key: str) -> JSON:
        server = self.shared["companion"]
        return {
            "type": "redis",
            "metadata": {"address": server.address, "listName": key, "listLength": TARGET},
        }

    async def close_rigs(self) -> None:
        """Stop every rig's proxies and brokers, the brokers in parallel (a JVM takes seconds)."""
        for task in self._started.values():  # a start still running (a failed run)
            with contextlib.suppress(Exception):
                await task
        await in_thread(self._close_rigs)

    def _close_rigs(self) -> None:
        for rig in self.rigs.values():
            with contextlib.suppress(Exception):
                rig.close_proxies()
        stops: list[Callable[[], None]] = [rig.close for rig in self.rigs.values()]
        stops += [shared.stop for shared in self.shared.values()]
        with ThreadPoolExecutor(max_workers=len(stops) or 1) as pool:
            for future in [pool.submit(stop) for stop in stops]:
                with contextlib.suppress(Exception):
                    future.result()

    # -- objects --------------------------------------------------------------------------

    async def create_row(
        self,
        name: str,
        spec: RowSpec,
        *,
        extra: JSON | None = None,
        auth_of: str = "",
        annotations: dict[str, str] | None = None,
    ) -> None:
        """The row's Secret + TriggerAuthentication (when it has auth params), Deployment at 1
        and ScaledObject. `extra` adds a second trigger; `auth_of` reuses another row's
        TriggerAuthentication (a companion object)."""
        trigger: JSON = {"type": spec.trigger_type, "metadata": dict(spec.metadata)}
        if spec.auth and auth_of:
            trigger["authenticationRef"] = {"name": auth_of}
        elif spec.auth:
            await self.kube.create(
                namespaced("", "v1", "secrets", self.ns),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name},
                    "stringData": dict(spec.auth),
                },
            )
            await self.kube.create(
                f"/apis/keda.sh/v1alpha1/namespaces/{self.ns}/triggerauthentications",
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "TriggerAuthentication",
                    "metadata": {"name": name},
                    "spec": {
                        "secretTargetRef": [
                            {"parameter": k, "name": name, "key": k} for k in sorted(spec.auth)
                        ]
                    },
                },
            )
            trigger["authenticationRef"] = {"name": name}
        triggers = [trigger] if extra is None else [trigger, extra]
        body = scaled_object(name, name, triggers, pollingInterval=POLL, cooldownPeriod=COOLDOWN)
        if annotations:
            body["metadata"]["annotations"] = dict(annotations)
        await self.cluster.create_deployment(deployment(name, replicas=1))
        await self.cluster.create_so(body)

    async def set_secret(self, name: str, values: dict[str, str]) -> None:
        await self.kube.merge_patch(
            namespaced("", "v1", "secrets", self.ns, name), {"stringData": values}
        )

    # -- probes ---------------------------------------------------------------------------

    def runtime(self, name: str) -> Any:
        return self.daemon.objects.get((self.ns, name))

    def polls(self, name: str) -> int:
        rt = self.runtime(name)
        return 0 if rt is None else int(rt.polls)

    def metric(self, name: str, index: int = 0) -> str | None:
        names = self.daemon.store.metric_names(self.ns, name)
        return names[index] if len(names) > index else None

    def record(self, name: str) -> MetricRecord | None:
        metric = self.metric(name)
        if metric is None:
            return None
        rec: MetricRecord | None = self.daemon.store.get(self.ns, name, metric)
        return rec

    async def replicas(self, name: str) -> int:
        return await self.cluster.replicas(name)

    async def ready(self, name: str) -> str:
        cond = await self.cluster.condition(name, "Ready")
        return "-" if cond is None else f"{cond['status']}/{cond.get('reason', '')}"

    async def api(self, name: str, index: int = 0) -> tuple[str, float | None]:
        """The metrics API's answer through the aggregator: ("value", v) or ("HTTP 5xx", None)."""
        metric = self.metric(name, index)
        if metric is None:
            return ("no metric registered", None)
        path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{self.ns}/{metric.lower()}"
        try:
            body = await self.kube.get(path, labelSelector=f"{SO_LABEL}={name}")
        except KubeError as exc:
            return (f"HTTP {exc.status}", None)
        items = body.get("items") or []
        if len(items) != 1:
            return (f"{len(items)} items", None)
        return ("value", parse_quantity(str(items[0]["value"])))

    async def telemetry(self) -> dict[str, float]:
        """Tidal's /metrics (the health port), summed per name{kind|direction}."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = f"http://127.0.0.1:{self.service.health_port}/metrics"
        async with self._http.get(url) as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("tidal_api_writes_total{"):
                kind = re.search(r'kind="([^"]*)"', line)
                key = f"writes:{kind.group(1) if kind else '?'}"
            elif line.startswith("tidal_scale_actions_total{"):
                direction = re.search(r'direction="([^"]*)"', line)
                key = f"actions:{direction.group(1) if direction else '?'}"
            elif line.startswith("tidal_push_subscription_up{"):
                so = re.search(r'scaledObject="([^"]*)"', line)
                index = re.search(r'triggerIndex="([^"]*)"', line)
                key = f"push:{so.group(1) if so else '?'}:{index.group(1) if index else '?'}"
            else:
                continue
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    async def wait_healthy(self, name: str, value: float = VALUE) -> None:
        """The object's first trigger sampled `value`, Ready=True, 1 replica, the API serves it."""

        async def state() -> tuple[Any, ...]:
            rec = self.record(name)
            good = rec is not None and not rec.failing and rec.value == value
            return (good, await self.ready(name), await self.replicas(name), await self.api(name))

        await eventually(
            state,
            lambda s: (
                s[0] and s[1] == "True/ScaledObjectReady" and s[2] == 1 and s[3] == ("value", value)
            ),
            what=f"{name} healthy (sample {value}, Ready=True, 1 replica, API {value})",
        )

    async def lift_pause(self, name: str) -> Any:
        """Remove paused-scale-in; returns the runtime it replaces (the edit rebuilds it)."""
        old = self.runtime(name)
        await self.cluster.patch_so(name, {"metadata": {"annotations": {PAUSE_SCALE_IN: None}}})
        return old


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    timeout: float = EVENTUALLY,
    what: str = "condition",
    every: float = PROBE_EVERY,
) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        last = await probe()
        if check(last):
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        await asyncio.sleep(every)


async def run_row(env: Env, rig: Rig, fault: str, hold: float = HOLD_SECONDS) -> RowResult:
    """Inject `fault` on a healthy row, hold it at least `hold` seconds after the main
    trigger's first failed poll, clear it, watch the recovery (see the module docstring)."""
    name = row_name(rig.scaler, fault)
    res = RESULTS[(rig.scaler, fault)] = RowResult(rig.scaler, fault)
    loop = asyncio.get_running_loop()
    objects = {"": name, **{c: f"{name}-{c}" for c in ("z", "q", "b")}}
    await asyncio.gather(
        env.wait_healthy(name), *(env.wait_healthy(objects[c], 0.0) for c in ("z", "q", "b"))
    )
    before = await env.telemetry()
    replicas_seen: set[int] = set()

    async def no_scale_down(*names: str) -> None:
        for n in names or tuple(objects.values()):
            replicas = await env.replicas(n)
            replicas_seen.add(replicas)
            res.replicas = ",".join(str(r) for r in sorted(replicas_seen))
            assert replicas == 1, f"{n}: the workload went to {replicas} replicas during the fault"

    def failing(n: str) -> bool:
        rec = env.record(n)
        return rec is not None and rec.failing

    await rig.inject(fault)
    injected = loop.time()

    # -- while the fault lasts: the main object -------------------------------------------
    ready_seen: list[str] = []
    api_seen: list[str] = []
    deadline = injected + EVENTUALLY + hold
    while True:
        await no_scale_down()
        rec = env.record(name)
        if rec is not None and rec.failing:
            if not res.error:
                res.error = (rec.error or "")[:160]
            res.failed_polls = rec.consecutive_failures
            ready = await env.ready(name)
            if not ready_seen or ready_seen[-1] != ready:
                ready_seen.append(ready)
            answer, value = await env.api(name)
            if failing(name):  # the fault held around the API call
                if answer == "value":
                    raise AssertionError(
                        f"{name}: the metrics API served {value} while the trigger failed "
                        f"({rec.error}); it must answer an error (never a 0, never a stale value)"
                    )
                if not api_seen or api_seen[-1] != answer:
                    api_seen.append(answer)
            if (
                rec.consecutive_failures >= 2
                and ready_seen[-1] == EXPECTED_READY[""]
                and api_seen
                and all(failing(n) for n in objects.values())
            ):
                break
        if loop.time() > deadline:
            raise AssertionError(
                f"{name}: the fault was not observed as expected within {EVENTUALLY:.0f}s: "
                f"latest record {rec!r}; Ready seen {ready_seen}; API answers {api_seen}; "
                f"failing: { {n: failing(n) for n in objects.values()} }"
            )
        await asyncio.sleep(PROBE_EVERY)

    # -- still under the fault: lift the scale-in pause of z and q --------------------------
    lifted = {n: await env.lift_pause(n) for n in (objects["z"], objects["q"])}

    def polls_since_lift(n: str) -> int:
        rt = env.runtime(n)
        return 0 if rt is None or rt is lifted[n] else int(rt.polls)

    while True:
        await no_scale_down()
        rec = env.record(name)
        assert rec is not None
        res.failed_polls = rec.consecutive_failures
        held = rec.error_since is not None and time.time() - rec.error_since >= hold
        if (
            held
            and rec.consecutive_failures >= MIN_FAILED_POLLS
            and all(polls_since_lift(n) >= LIFTED_POLLS for n in lifted)
        ):
            break
        assert all(failing(n) for n in objects.values()), (
            f"{name}: the fault cleared by itself: { {n: env.record(n) for n in objects.values()} }"
        )
        if loop.time() > deadline:
            raise AssertionError(
                f"{name}: z/q not polled {LIFTED_POLLS} times with the pause lifted: "
                f"{ {n: polls_since_lift(n) for n in lifted} }"
            )
        await asyncio.sleep(PROBE_EVERY)
    ready_main = await env.ready(name)
    if ready_main != ready_seen[-1]:
        ready_seen.append(ready_main)
    first_error = ready_seen.index(EXPECTED_READY[""])
    # Once Tidal reported the error, it kept reporting it. (A Ready=True seen before that is
    # the status write of the first failed poll, still in flight.)
    res.ready = " → ".join(ready_seen[first_error:])
    res.api = " → ".join(api_seen)
    assert all(r == EXPECTED_READY[""] for r in ready_seen[first_error:]), (
        f"{name}: Ready changed during the fault: {ready_seen}"
    )
    assert all(a.startswith("HTTP 5") for a in api_seen), (
        f"{name}: the metrics API answered {api_seen} during the fault (expected 5xx errors)"
    )
    # z, q and b under the same fault: the conditions of the decision table; the failing metric
    # is an error, the healthy one keeps its value.
    seen: list[str] = []
    for suffix in ("z", "q", "b"):
        n = objects[suffix]
        ready = await eventually(
            lambda n=n: env.ready(n),
            lambda r, want=EXPECTED_READY[suffix]: r == want,
            timeout=30,
            what=f"{n} {EXPECTED_READY[suffix]} while the fault lasts",
        )
        seen.append(f"{suffix}: {ready}")
        answer = await env.api(n, 0)
        assert answer[0].startswith("HTTP 5"), f"{n}: the failing metric answered {answer}"
        if suffix in COMPANION_VALUE:
            healthy = await env.api(n, 1)
            assert healthy == ("value", COMPANION_VALUE[suffix]), f"{n}: healthy metric {healthy}"
        assert failing(n), f"{n}: the fault cleared before it was checked"
    res.companions = ", ".join(seen)
    await no_scale_down()
    during = await env.telemetry()
    for key in ("writes:scale", "actions:down"):
        assert during.get(key, 0.0) == before.get(key, 0.0), (
            f"{name}: {key} went {before.get(key, 0.0)} → {during.get(key, 0.0)} during the fault"
        )

    # -- after it clears ------------------------------------------------------------------
    await rig.clear(fault)
    cleared = loop.time()
    p0 = env.polls(name)
    while True:
        rec = env.record(name)
        if rec is not None and not rec.failing:
            res.recover_s = loop.time() - cleared
            res.recover_polls = env.polls(name) - p0
            break
        if loop.time() > cleared + EVENTUALLY:
            res.detail = f"no good sample {EVENTUALLY:.0f}s after the fault cleared"
            raise AssertionError(f"{name}: {res.detail}; latest record {rec!r}")
        await asyncio.sleep(0.05)
    # z and q are healthy, inactive and long past their cooldown now: 1 → 0, and only after
    # their trigger sampled again.
    drained = {objects["z"], objects["q"]}
    while drained:
        for n in sorted(drained):
            replicas = await env.replicas(n)
            if replicas == 0:
                assert not failing(n), f"{n}: scaled to 0 while its trigger still failed"
                drained.discard(n)
            else:
                assert replicas == 1, f"{n}: {replicas} replicas after the fault"
        if loop.time() > cleared + EVENTUALLY:
            raise AssertionError(f"{sorted(drained)} not deactivated after the fault cleared")
        await asyncio.sleep(0.1)
    res.drained_s = loop.time() - cleared
    await eventually(
        lambda: env.ready(name), lambda r: r == "True/ScaledObjectReady", what=f"{name} Ready"
    )
    res.ready_again_s = loop.time() - cleared
    await eventually(lambda: env.api(name), lambda a: a == ("value", VALUE), what=f"{name} API")
    await eventually(
        lambda: env.ready(objects["b"]),
        lambda r: r == "True/ScaledObjectReady",
        what=f"{objects['b']} Ready",
    )
    await no_scale_down(name, objects["b"])
    after = await env.telemetry()
    for key in ("writes:scale", "actions:down"):  # exactly z and q, after the fault
        assert after.get(key, 0.0) == during.get(key, 0.0) + 2, (
            f"{name}: {key} went {during.get(key, 0.0)} → {after.get(key, 0.0)} after the fault"
            " (expected +2: z and q deactivated)"
        )
    assert res.recover_polls is not None
    assert res.recover_polls <= RECOVERY_POLLS + POLL_SLACK, (
        f"{name}: the trigger sampled again only {res.recover_polls} polls "
        f"({res.recover_s:.1f}s) after the fault cleared (≤ {RECOVERY_POLLS} + {POLL_SLACK})"
    )
    return res
