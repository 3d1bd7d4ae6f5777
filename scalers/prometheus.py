"""The `prometheus` trigger: one instant query's single value.

``GET <serverAddress>/api/v1/query?query=...&time=<now, RFC 3339>`` (plus ``namespace`` and
``queryParameters``; ``customHeaders`` and auth headers). The answer must hold exactly one
element (a one-sample vector or a scalar). An empty vector, or a NaN/Inf value, reads 0 when
``ignoreNullValues`` is true (KEDA's documented default) and is a QueryError otherwise; more
than one element, a range vector, a non-2xx answer or a body that is not Prometheus' JSON are
QueryErrors. Active when the value is strictly greater than ``activationThreshold``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError
from scaler.params import Config, Param
from scalers.http_common import (
    HTTP_PARAMS,
    HttpAuth,
    HttpSource,
    timeout_of,
    validate_auth,
    validate_url,
)


class PrometheusScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("serverAddress", sources=("metadata", "auth", "env"), required=True),
        Param("query", sources=("metadata",), required=True),
        Param("threshold", "float", sources=("metadata",), required=True),
        Param("activationThreshold", "float", sources=("metadata",), default=0.0),
        Param("namespace", sources=("metadata",)),
        Param("queryParameters", "map", sources=("metadata",)),
        Param("customHeaders", "map", sources=("metadata",)),
        Param("ignoreNullValues", "bool", sources=("metadata",), default=True),
        *HTTP_PARAMS,
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        return [
            *validate_url("serverAddress", config.get_str("serverAddress")),
            *validate_auth(config),
        ]

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._url = config.get_str("serverAddress").rstrip("/") + "/api/v1/query"
        self._query = config.get_str("query")
        params = dict(config.get_map("queryParameters"))
        namespace = config.opt_str("namespace")
        if namespace:
            params["namespace"] = namespace
        self._params = params
        self._headers = dict(config.get_map("customHeaders"))
        self._ignore_null = config.get_bool("ignoreNullValues")
        self._activation = config.get_float("activationThreshold")
        self._spec = MetricSpec(
            metric_name(trigger.index, "prometheus"),
            config.get_float("threshold"),
            trigger.metric_type,
        )
        auth = HttpAuth.from_config(config, ("X-API-KEY", "api_key"))
        self._source = HttpSource(
            "prometheus", self._url, auth, timeout_of(config, trigger), clients
        )

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        moment = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        params = {"query": self._query, "time": moment, **self._params}
        body = await self._source.get(self._url, params, self._headers)
        value = self._value(body)
        return Sample(value, value > self._activation, now)

    def _value(self, body: bytes) -> float:
        try:
            answer = json.loads(body)
            data = answer["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise QueryError(f"prometheus: unexpected answer ({type(exc).__name__})") from exc
        pair: Any
        if kind == "scalar":
            pair = result
        elif kind == "vector":
            if not isinstance(result, list):
                raise QueryError("prometheus: unexpected answer (result is not a list)")
            if not result:
                return self._null("the result is empty")
            if len(result) > 1:
                raise QueryError(
                    f"prometheus query {self._query} returned multiple elements ({len(result)})"
                )
            pair = result[0].get("value") if isinstance(result[0], dict) else None
        else:
            raise QueryError(
                f"prometheus query {self._query} returned a {kind}, expected a vector or scalar"
            )
        if not isinstance(pair, list) or len(pair) < 2:
            return self._null("the value list is empty")
        try:
            value = float(pair[1])
        except (TypeError, ValueError) as exc:
            raise QueryError(f"prometheus: value {pair[1]!r} is not a number") from exc
        if math.isnan(value) or math.isinf(value):
            return self._null(f"the value is {pair[1]}")
        return value

    def _null(self, why: str) -> float:
        if self._ignore_null:
            return 0.0
        raise QueryError(
            f"prometheus metrics 'prometheus' target may be lost, {why} (ignoreNullValues is false)"
        )

    async def aclose(self) -> None:
        await self._source.aclose()
