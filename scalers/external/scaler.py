"""The `external` and `external-push` triggers: any KEDA external scaler, over gRPC.

Parameters as KEDA's: ``scalerAddress`` (required), ``enableTLS``, ``unsafeSsl`` in the
metadata; ``caCert``, ``tlsClientCert``, ``tlsClientKey`` from a TriggerAuthentication. Every
metadata key (these included) goes to the scaler as ``ScaledObjectRef.scalerMetadata``; a
``<key>FromEnv`` key carries the value of the container env variable it names (left out when
that is unset or empty), under its own name, as KEDA sends it.

The metric: ``GetMetricSpec`` answers the scaler's metric name and target; the HPA metric is
``s<index>-<metricName>`` (KEDA's name, normalized), its target ``targetSizeFloat`` when > 0,
else ``targetSize``. A sample is ``GetMetrics`` (asked for the metric name without the
``s<index>-`` prefix; the values it returns are summed, ``metricValueFloat`` when > 0, else
``metricValue``) and ``IsActive`` (the activity), both with the trigger's timeout as deadline.
Any failed call, an empty answer, or no answer in time is a `ScalerError`: never a zero.

``external-push`` adds one ``StreamIsActive`` stream per object (see `ExternalPushScaler`);
polling continues as with KEDA.

The spec needs a call, and the core asks for it synchronously (``metric_spec()``); `prepare()`
fetches it asynchronously for a core that awaits it first. Without that, ``metric_spec()``
makes the call on a worker thread and waits (at most the timeout) -- see `_blocking_spec`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar

import grpc
import grpc.aio

from scaler.clients import ClientKey, ClientPool, TlsSettings
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name, normalize_metric_detail
from scaler.errors import KubeError, QueryError, ScalerError
from scaler.params import Config, Param
from scalers.external import externalscaler_pb2 as pb
from scalers.external.client import (
    Endpoint,
    ExternalChannel,
    call_error,
    call_unary,
    open_channel,
    split_host_port,
)

log = logging.getLogger(__name__)

REWAKE_AFTER = 5.0  # seconds: a sustained isActive=true wakes the object again at most this often
SILENT_FOR = 30.0  # seconds: a scaler whose synchronous GetMetricSpec timed out is not re-asked
_SILENT: dict[ClientKey, float] = {}  # endpoint -> when its synchronous GetMetricSpec timed out


def scaler_metadata(trigger: TriggerContext) -> dict[str, str]:
    """``ScaledObjectRef.scalerMetadata`` as KEDA builds it: every trigger metadata key;
    a ``...FromEnv`` key gets the env value it names, or is left out when that is unset."""
    out: dict[str, str] = {}
    for key, value in trigger.metadata.items():
        if key.endswith("FromEnv"):
            resolved = trigger.resolved_env.get(value, "")
            if resolved:
                out[key] = resolved
        else:
            out[key] = value
    return out


def endpoint_of(config: Config) -> Endpoint:
    ca = config.opt_str("caCert")
    cert, key = config.opt_str("tlsClientCert"), config.opt_str("tlsClientKey")
    use_tls = config.get_bool("enableTLS") or bool(ca) or bool(cert and key)
    tls = None
    if use_tls:
        tls = TlsSettings(ca=ca, cert=cert, key=key, verify=not config.get_bool("unsafeSsl"))
    return Endpoint(config.get_str("scalerAddress"), tls)


class MetricSpecUnavailable(KubeError):
    """GetMetricSpec failed while the object was being built.

    A KubeError only so that today's builder reports it (Ready=False, a Warning Event) and
    builds the object again at its next poll, as it does for an unreadable scale target; a
    ConfigError would block the object until it is edited. Goes away once the builder awaits
    `prepare()` and treats a ScalerError from it as a retryable build failure.
    """


class ExternalScaler:
    """`external`: polled with GetMetrics + IsActive."""

    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("scalerAddress", sources=("metadata",), required=True),
        Param("enableTLS", "bool", sources=("metadata",), default=False),
        Param("unsafeSsl", "bool", sources=("metadata",), default=False),
        Param("caCert", sources=("auth",), secret=True),
        Param("tlsClientCert", sources=("auth",), secret=True),
        Param("tlsClientKey", sources=("auth",), secret=True),
    )
    SAMPLED = True
    # Every metadata key is the scaler's (scalerMetadata): none is "unknown" to Tidal.
    PASSES_METADATA_THROUGH = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        try:
            split_host_port(config.get_str("scalerAddress"))
        except ValueError as exc:
            problems.append(str(exc))
        cert, key = config.opt_str("tlsClientCert"), config.opt_str("tlsClientKey")
        if bool(cert) != bool(key):
            problems.append("tlsClientCert and tlsClientKey must be given together")
        tls = endpoint_of(config).tls
        if tls is not None:
            try:
                tls.check()
            except ValueError as exc:
                problems.append(f"TLS material: {exc}")
            except TypeError:  # the ssl module refuses non-ASCII PEM text this way
                problems.append("TLS material: a certificate or key is not ASCII PEM text")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._trigger = trigger
        self._timeout = trigger.timeout
        self._endpoint = endpoint_of(config)
        self._channel = ExternalChannel(self._endpoint, clients, self._timeout)
        self._ref = pb.ScaledObjectRef(
            name=trigger.object_name,
            namespace=trigger.namespace,
            scalerMetadata=scaler_metadata(trigger),
        )
        self._spec: MetricSpec | None = None
        self._asked = ""  # the metric name GetMetrics is asked for

    # ------------------------------------------------------------------ metric spec

    async def prepare(self) -> None:
        """Fetch the metric spec (GetMetricSpec); ScalerError when the scaler cannot answer."""
        answer = await self._channel.unary(
            "GetMetricSpec", self._ref, pb.GetMetricSpecResponse.FromString, self._timeout
        )
        _SILENT.pop(self._endpoint.key, None)  # it answers again
        self._set_spec(answer)

    def metric_spec(self) -> MetricSpec:
        if self._spec is None:
            answer = self._blocking_spec()
            try:
                self._set_spec(answer)
            except ScalerError as exc:
                raise MetricSpecUnavailable(str(exc)) from exc
        assert self._spec is not None
        return self._spec

    def _set_spec(self, answer: pb.GetMetricSpecResponse) -> None:
        where = self._endpoint.describe()
        specs = list(answer.metricSpecs)
        if not specs:
            raise ScalerError(f"{where}: GetMetricSpec returned no metric spec")
        if len(specs) > 1:
            log.warning(
                "external scaler returned several metric specs; using the first",
                extra={
                    "object": f"{self._trigger.namespace}/{self._trigger.object_name}",
                    "trigger": self._trigger.index,
                    "metrics": [s.metricName for s in specs],
                },
            )
        spec = specs[0]
        if not spec.metricName:
            raise ScalerError(f"{where}: GetMetricSpec returned a metric spec without a name")
        target = spec.targetSizeFloat if spec.targetSizeFloat > 0 else float(spec.targetSize)
        if target <= 0:
            raise ScalerError(
                f"{where}: GetMetricSpec returned target {target:g} for metric"
                f" '{spec.metricName}' (the HPA needs a target above 0)"
            )
        self._asked = normalize_metric_detail(spec.metricName)
        self._spec = MetricSpec(
            metric_name(self._trigger.index, spec.metricName), target, self._trigger.metric_type
        )

    def _blocking_spec(self) -> pb.GetMetricSpecResponse:
        """GetMetricSpec on a channel of its own, in a worker thread with its own event loop,
        waited for at most the timeout (plus the TLS pinning of ``unsafeSsl``). Blocks the
        caller's loop meanwhile: only for a core that did not await `prepare()`. A scaler that
        let such a call time out is not asked this way again for `SILENT_FOR` seconds (the
        builds of its other objects fail at once instead of each holding the loop)."""
        key = self._endpoint.key
        since = _SILENT.get(key)
        if since is not None and time.monotonic() - since < SILENT_FOR:
            raise MetricSpecUnavailable(
                f"{self._endpoint.describe()}: GetMetricSpec failed: no answer in time"
                f" (a call in the last {SILENT_FOR:g} s timed out; not asked again yet)"
            )
        try:
            return self._blocking_call()
        except MetricSpecUnavailable as exc:
            if "DEADLINE_EXCEEDED" in str(exc) or "no answer in time" in str(exc):
                _SILENT[key] = time.monotonic()
            raise

    def _blocking_call(self) -> pb.GetMetricSpecResponse:
        pool = concurrent.futures.ThreadPoolExecutor(1, "tidal-external-spec")
        future = pool.submit(asyncio.run, self._spec_on_own_channel())
        try:
            return future.result(timeout=2 * self._timeout + 1.0)
        except ScalerError as exc:
            raise MetricSpecUnavailable(str(exc)) from exc
        except concurrent.futures.TimeoutError as exc:
            error = call_error(self._endpoint, "GetMetricSpec", TimeoutError())
            raise MetricSpecUnavailable(str(error)) from exc
        finally:
            pool.shutdown(wait=False)  # a late thread ends on its own deadline

    async def _spec_on_own_channel(self) -> pb.GetMetricSpecResponse:
        endpoint, timeout = self._endpoint, self._timeout
        try:
            channel = await open_channel(endpoint, timeout)
        except (grpc.RpcError, ValueError, OSError) as exc:
            raise call_error(endpoint, "connect", exc) from exc
        try:
            return await call_unary(
                channel,
                endpoint,
                "GetMetricSpec",
                self._ref,
                pb.GetMetricSpecResponse.FromString,
                timeout,
            )
        finally:
            await channel.close(grace=None)

    # ------------------------------------------------------------------ sampling

    async def sample(self, now: float) -> Sample:
        if self._spec is None:
            await self.prepare()
        request = pb.GetMetricsRequest(scaledObjectRef=self._ref, metricName=self._asked)
        metrics, active = await asyncio.gather(
            self._channel.unary(
                "GetMetrics", request, pb.GetMetricsResponse.FromString, self._timeout
            ),
            self._channel.unary(
                "IsActive", self._ref, pb.IsActiveResponse.FromString, self._timeout
            ),
            return_exceptions=True,
        )
        for outcome in (metrics, active):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(metrics, pb.GetMetricsResponse)
        assert isinstance(active, pb.IsActiveResponse)
        values = list(metrics.metricValues)
        if not values:
            raise QueryError(
                f"{self._endpoint.describe()}: GetMetrics returned no value for '{self._asked}'"
            )
        value = sum(v.metricValueFloat if v.metricValueFloat > 0 else v.metricValue for v in values)
        return Sample(float(value), bool(active.result), now)

    async def aclose(self) -> None:
        await self._channel.aclose()


class ExternalPushScaler(ExternalScaler):
    """`external-push`: `external` plus a StreamIsActive stream that wakes the object.

    `wakeups()` opens the stream on the shared channel and yields once the server's response
    headers arrive (the stream is open on the server), then on every ``isActive: true`` that
    follows a false (or is the stream's first), and on a sustained true at most every
    `REWAKE_AFTER` seconds (the HTTP add-on repeats true every 200 ms while requests wait; a
    wake-up per message would only re-sample). ``false`` wakes nothing: deactivation follows
    the polls and the cooldown, as in KEDA. A failed or ended stream raises `ScalerError`; the
    core reconnects with backoff and polls meanwhile.
    """

    def wakeups(self) -> AsyncIterator[None]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[None]:
        call = await self._channel.stream_is_active(self._ref)
        where = self._endpoint
        try:
            await call.initial_metadata()
            if call.done():
                code = await call.code()
                raise ScalerError(
                    f"{where.describe()}: StreamIsActive failed: {code.name}"
                    f" {await call.details() or ''}".rstrip()
                )
            yield None  # subscribed
            was_active = False
            last_wake = 0.0
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    raise ScalerError(f"{where.describe()}: StreamIsActive ended")
                assert isinstance(message, pb.IsActiveResponse)
                if message.result:
                    moment = time.monotonic()
                    if not was_active or moment - last_wake >= REWAKE_AFTER:
                        last_wake = moment
                        yield None
                was_active = message.result
        except grpc.aio.AioRpcError as exc:
            raise call_error(where, "StreamIsActive", exc) from exc
        finally:
            call.cancel()
