"""The `http` trigger: requests of one HTTPScaledObject, summed over every interceptor replica.

Tidal writes this trigger into the ScaledObject it creates for each HTTPScaledObject
(scaler/http_objects.py); it can also be written by hand (metadata below). The value is either
the in-flight requests (``metric: concurrency``) or the request rate per ``granularity`` over
``window`` (``metric: requestRate``), against ``targetValue`` per replica (AverageValue).

Push: every change an interceptor reports wakes the object at once (`wakeups`), so a request at
a workload scaled to zero reaches the scale decision without any polling interval. Activity:
the trigger is active while a request is in flight or when requests arrived since its previous
sample. Every arrival wakes a sample, so the object's last active time -- from which the
ScaledObject's cooldownPeriod (the HTTPScaledObject's scaledownPeriod) counts -- is the time of
the last request, not of the activation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from scaler.clients import ClientKey, ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param
from scalers.http.feed import InterceptorFeed, parse_addresses

METRICS = ("concurrency", "requestRate")


async def _close_feed(feed: InterceptorFeed) -> None:
    await feed.aclose()


class HttpScaler:
    PARAMS = (
        Param(
            "interceptors",
            "list",
            sources=("metadata",),
            required=True,
            doc="host:port of the interceptors' admin port (a headless Service name resolves "
            "to every replica)",
        ),
        Param(
            "httpScaledObject",
            sources=("metadata",),
            doc="name of the HTTPScaledObject in the ScaledObject's namespace (default: the "
            "ScaledObject's name)",
        ),
        Param("metric", sources=("metadata",), default="concurrency", allowed=METRICS),
        Param("targetValue", "float", sources=("metadata",), default=100.0, above=0),
        Param("window", "duration", sources=("metadata",), default=60.0, minimum=1),
        Param("granularity", "duration", sources=("metadata",), default=1.0, minimum=1),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        try:
            parse_addresses(config.get_list("interceptors"))
        except ValueError as exc:
            return [str(exc)]
        if config.get_duration("granularity") > config.get_duration("window"):
            return ["granularity must not be longer than window"]
        return []

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._addresses = tuple(parse_addresses(config.get_list("interceptors")))
        name = config.opt_str("httpScaledObject") or trigger.object_name
        self.key = f"{trigger.namespace}/{name}"
        self._metric = config.get_str("metric")
        self._target = config.get_float("targetValue")
        self._window = config.get_duration("window")
        self._granularity = config.get_duration("granularity")
        self._timeout = trigger.timeout
        self._name = metric_name(trigger.index, f"http-{name}")
        addresses, timeout = self._addresses, self._timeout

        async def create() -> InterceptorFeed:
            feed = InterceptorFeed(addresses, timeout)
            await feed.start()
            return feed

        where = ",".join(f"{h}:{p}" for h, p in addresses)
        self._feed_slot: LeaseSlot[InterceptorFeed] = LeaseSlot(
            clients, self.key, ClientKey("http-interceptors", where), create, _close_feed
        )
        self._seen_arrivals: int | None = None

    def metric_spec(self) -> MetricSpec:
        return MetricSpec(self._name, self._target, "AverageValue")

    async def _feed(self) -> InterceptorFeed:
        return await self._feed_slot.take()

    async def sample(self, now: float) -> Sample:
        feed = await self._feed()
        if not feed.connected:
            raise ScalerError(f"{self.key}: no interceptor stream is connected")
        in_flight = feed.in_flight(self.key)
        arrivals = feed.arrivals(self.key)
        arrived = self._seen_arrivals is not None and arrivals != self._seen_arrivals
        self._seen_arrivals = arrivals
        if self._metric == "concurrency":
            value = float(in_flight)
        else:
            count = feed.arrivals_within(self.key, self._window, now)
            value = count * self._granularity / self._window
        return Sample(value, in_flight > 0 or arrived, now)

    async def wakeups(self) -> AsyncIterator[None]:
        feed = await self._feed()
        if not feed.connected:
            raise ScalerError(f"{self.key}: no interceptor stream is connected")
        flag = asyncio.Event()
        feed.subscribe(self.key, flag)
        try:
            yield None  # the feed's streams are connected: every change from now on sets flag
            while True:
                await flag.wait()
                flag.clear()
                yield None
        finally:
            feed.unsubscribe(self.key, flag)

    async def aclose(self) -> None:
        await self._feed_slot.release()
