"""The ``nats-jetstream`` trigger: a durable consumer's lag, ``num_pending + num_ack_pending``.

Two ways to read it (KEDA's manifests use the first, unchanged):

* monitoring mode, ``natsServerMonitoringEndpoint`` (+ ``account``, ``useHttps``): the HTTP
  ``/jsz`` listing, shared by every object on the (endpoint, account): one GET serves every
  sample within half a second, so a node is asked about twice a second at any object count;
  read from each consumer's leader in a cluster (`scalers.nats_monitor`, `scalers.nats_jsz`);
* client mode, ``natsServer: nats://host:4222`` alone: ``$JS.API.CONSUMER.INFO`` over one shared
  nats-py connection per server and credentials (`scalers.nats_client`), answered by the leader.

A missing stream or consumer is an error (QueryError), never a lag of 0. Active when the lag is
strictly greater than ``activationLagThreshold``. Metric ``s<i>-nats-jetstream-<stream>``.

Push: when ``natsServer`` is given (alone or with the monitoring endpoint), `wakeups()`
subscribes to the stream's subjects on the shared connection, yields once the server has the
subscription, then on every message.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar
from urllib.parse import urlsplit

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param, Source
from scalers.nats_client import NatsConnection, NatsTarget, nats_url
from scalers.nats_jsz import MonitorTarget
from scalers.nats_monitor import JszPoller, poller_slot

_META_AUTH: tuple[Source, ...] = ("metadata", "auth")
_AUTH: tuple[Source, ...] = ("auth",)
_NATS_SCHEMES = ("nats", "tls")


class NatsJetStreamScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("natsServerMonitoringEndpoint", sources=_META_AUTH, doc="host:port of /jsz"),
        Param("account", aliases=("accountID",), sources=_META_AUTH),
        Param("stream", sources=("metadata",), required=True),
        Param("consumer", sources=("metadata",), required=True),
        Param("lagThreshold", "int", sources=("metadata",), default=10, above=0),
        Param("activationLagThreshold", "int", sources=("metadata",), default=0),
        Param("useHttps", "bool", sources=("metadata",), default=False),
        Param("natsServer", sources=_META_AUTH, doc="nats://host:port: client mode and push"),
        Param("username", sources=_AUTH),
        Param("password", sources=_AUTH, secret=True),
        Param("token", sources=_AUTH, secret=True),
        Param("nkeySeed", sources=_AUTH, secret=True),
        Param("creds", sources=_AUTH, secret=True, doc="text of a .creds file"),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        endpoint = config.opt_str("natsServerMonitoringEndpoint")
        server = config.opt_str("natsServer")
        if endpoint is None and server is None:
            problems.append(
                "missing required parameter 'natsServerMonitoringEndpoint' (or 'natsServer' for"
                " client mode) in [triggerMetadata authParams]"
            )
        if endpoint is not None:
            if _monitor_address(endpoint) is None:
                problems.append(
                    f"invalid natsServerMonitoringEndpoint '{endpoint}': expected host:port"
                )
            if config.opt_str("account") is None:
                problems.append(
                    "missing required parameter 'account' or 'accountID' in"
                    " [triggerMetadata authParams]"
                )
        if server is not None and "@" in urlsplit(server).netloc:
            problems.append(
                f"natsServer '{_shown(server)}' carries credentials: give them as"
                " TriggerAuthentication parameters (username/password, token, nkeySeed, creds)"
            )
        elif server is not None and (
            "://" not in server or nats_url(server, _NATS_SCHEMES) is None
        ):
            problems.append(
                f"invalid natsServer '{_shown(server)}': expected nats://host:port or tls://host:port"
            )
        methods = [name for name in ("username", "token", "nkeySeed", "creds") if config.has(name)]
        if len(methods) > 1:
            problems.append(f"use only one of username/password, token, nkeySeed, creds: {methods}")
        if config.has("password") and not config.has("username"):
            problems.append("password given without username")
        if methods and server is None:
            problems.append("NATS credentials need 'natsServer' (the monitoring port takes none)")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._stream = config.get_str("stream")
        self._consumer = config.get_str("consumer")
        self._activation = config.get_int("activationLagThreshold")
        self._spec = MetricSpec(
            metric_name(trigger.index, f"nats-jetstream-{self._stream}"),
            float(config.get_int("lagThreshold")),
            trigger.metric_type,
        )
        self._monitor: MonitorTarget | None = None
        endpoint = config.opt_str("natsServerMonitoringEndpoint")
        if endpoint is not None:
            host, port = _monitor_address(endpoint) or ("", 0)
            scheme = "https" if config.get_bool("useHttps") else "http"
            self._monitor = MonitorTarget(
                scheme,
                host,
                port or (443 if scheme == "https" else 80),
                config.get_str("account"),
                trigger.timeout,
            )
        self._nats: NatsConnection | None = None
        server = config.opt_str("natsServer")
        if server is not None:
            target = NatsTarget(
                server,
                username=config.opt_str("username"),
                password=config.opt_str("password"),
                token=config.opt_str("token"),
                nkey_seed=config.opt_str("nkeySeed"),
                creds=config.opt_str("creds"),
                timeout=trigger.timeout,
            )
            self._nats = NatsConnection(target, clients)
        self._poller: LeaseSlot[JszPoller] | None = None
        if self._monitor is not None:
            self._poller = poller_slot(self._monitor, clients)
        self._woken_at = -math.inf  # loop time of the latest push wake-up

    @property
    def mode(self) -> str:
        """ "monitoring" (the /jsz listing) or "client" ($JS.API.CONSUMER.INFO)."""
        return "monitoring" if self._monitor is not None else "client"

    @property
    def monitor(self) -> MonitorTarget | None:
        return self._monitor

    @property
    def poller(self) -> JszPoller | None:
        """The shared /jsz poller once acquired (benchmarks read its request counters)."""
        return None if self._poller is None else self._poller.client

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        lag = await self._lag(now)
        return Sample(float(lag), lag > self._activation, now)

    async def _lag(self, now: float) -> int:
        if self._poller is not None:  # monitoring mode
            poller = await self._poller.take()
            # A /jsz answer fetched for another object's sample up to half a second earlier
            # will do -- unless a message woke this object since: then only a newer one.
            found = await poller.lag(self._stream, self._consumer, now, not_before=self._woken_at)
            return found.lag
        assert self._nats is not None
        pending, ack_pending = await self._nats.consumer_lag(self._stream, self._consumer)
        return pending + ack_pending

    def wakeups(self) -> AsyncIterator[None]:
        """A new iterator yielding on every message of the stream (needs ``natsServer``)."""
        return self._wakeups()

    async def _wakeups(self) -> AsyncIterator[None]:
        if self._nats is None:
            raise ScalerError(
                "nats-jetstream: push needs 'natsServer'; polling the monitoring endpoint only"
            )
        subjects = await self._nats.stream_subjects(self._stream)
        loop = asyncio.get_running_loop()
        async for _ in self._nats.messages(subjects):
            self._woken_at = loop.time()
            yield None

    async def aclose(self) -> None:
        if self._poller is not None:
            await self._poller.release()
        if self._nats is not None:
            await self._nats.aclose()


def _monitor_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of KEDA's ``host:port`` (a port is optional: 80/443 by scheme)."""
    if "://" in endpoint or "/" in endpoint or "?" in endpoint or "@" in endpoint:
        return None
    try:
        parts = urlsplit(f"//{endpoint}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or 0


def _shown(server: str) -> str:
    """`server` without userinfo (a URL may carry credentials)."""
    parts = urlsplit(server)
    if "@" not in parts.netloc:
        return server
    return server.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1], 1)
