"""The `metrics-api` trigger: a number found in a JSON document served over HTTP.

``GET <url>``; ``valueLocation`` is a GJSON-like dotted path (``components.worker.tasks``,
``items.0.value``, ``items.#`` for an array's length). The value may be a JSON number or a
string holding a Kubernetes quantity ("12", "1.5", "10Mi"). Only ``format: json`` is supported
(xml, yaml and prometheus are UnsupportedError). Non-2xx, a missing path or a non-number are
QueryErrors. Active when the value is strictly greater than ``activationTargetValue``.

``aggregateFromKubeServiceEndpoints: "true"``: the URL's host names a Service
(``<service>.<namespace>[.svc...]``); every ready endpoint of its EndpointSlices (the port the
URL names, by number, or 80/443 by scheme) is asked the same path, at most 5 at a time, and the
values are aggregated by ``aggregationType`` (average, sum, max, min) as KEDA does. Unlike
KEDA, an endpoint that fails fails the sample: a sum or an average over the endpoints that
happened to answer would report less load than there is (an error is never a lower value).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Iterable
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError, UnsupportedError
from scaler.params import Config, Param
from scalers.http_common import (
    HTTP_PARAMS,
    HttpAuth,
    HttpSource,
    json_path,
    safe_url,
    timeout_of,
    validate_auth,
    validate_url,
)

ENDPOINT_CONCURRENCY = 5  # endpoints asked at once (KEDA's maxGoroutines)
_QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?"
)
_SUFFIX = {
    None: 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(text: str) -> float | None:
    """A Kubernetes quantity as a float ("10Mi" -> 10485760.0), or None."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match.group(1)) * _SUFFIX[match.group(2)]
    return value if math.isfinite(value) else None


class MetricsApiScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("url", sources=("metadata",), required=True),
        Param("valueLocation", sources=("metadata",), required=True),
        Param("targetValue", "float", sources=("metadata",), required=True),
        Param("activationTargetValue", "float", sources=("metadata",), default=0.0),
        Param(
            "format",
            sources=("metadata",),
            default="json",
            allowed=("json", "xml", "yaml", "prometheus"),
        ),
        Param("aggregateFromKubeServiceEndpoints", "bool", sources=("metadata",), default=False),
        Param(
            "aggregationType",
            sources=("metadata",),
            default="average",
            allowed=("average", "sum", "max", "min"),
        ),
        *HTTP_PARAMS,
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems = [*validate_url("url", config.get_str("url")), *validate_auth(config)]
        if config.get_float("targetValue") == 0:
            problems.append("no targetValue given in metadata")
        unsupported = []
        if config.get_str("format") != "json":
            unsupported.append(
                f"metrics-api format '{config.get_str('format')}' is not supported by Tidal"
                " (only json)"
            )
        if config.get_bool("aggregateFromKubeServiceEndpoints") and not problems:
            host = urlsplit(config.get_str("url")).hostname or ""
            if len(host.split(".")) < 2:
                problems.append(
                    f"invalid hostname {host} : expected at least 2 elements, first being "
                    "service name and second being the namespace"
                )
        if unsupported:
            raise UnsupportedError(unsupported + problems)
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._url = config.get_str("url")
        self._location = config.get_str("valueLocation")
        self._activation = config.get_float("activationTargetValue")
        self._spec = MetricSpec(
            metric_name(trigger.index, f"metric-api-{self._location}"),
            config.get_float("targetValue"),
            trigger.metric_type,
        )
        auth = HttpAuth.from_config(config, ("X-API-KEY", "api_key"))
        self._source = HttpSource(
            "metrics-api", self._url, auth, timeout_of(config, trigger), clients
        )
        self._clients = clients
        self._aggregate = config.get_bool("aggregateFromKubeServiceEndpoints")
        self._aggregation = config.get_str("aggregationType")

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        if self._aggregate:
            value = await self._from_endpoints()
        else:
            value = self.value_from(await self._source.get(self._url))
        return Sample(value, value > self._activation, now)

    async def _from_endpoints(self) -> float:
        """KEDA's aggregateMetricsFromMultipleEndpoints, failing on any endpoint's failure."""
        directory = self._clients.endpoints
        if directory is None:
            raise QueryError("aggregateFromKubeServiceEndpoints needs the daemon's cluster access")
        url = urlsplit(self._url)
        host = url.hostname or ""
        service, namespace = host.split(".")[:2]
        port = str(url.port or (443 if url.scheme == "https" else 80))
        found = await directory.endpoints(namespace, service, port)
        if not found:
            raise QueryError(
                f"metrics-api: no ready endpoints behind Service {namespace}/{service} port {port}"
            )
        gate = asyncio.Semaphore(ENDPOINT_CONCURRENCY)

        async def one(address: str) -> float:
            endpoint = urlunsplit((url.scheme, address, url.path, url.query, ""))
            async with gate:
                try:
                    return self.value_from(await self._source.get(endpoint))
                except QueryError as exc:
                    raise QueryError(f"endpoint {address} of {namespace}/{service}: {exc}") from exc

        values = await asyncio.gather(*(one(a) for a in found))
        if self._aggregation == "sum":
            return float(sum(values))
        if self._aggregation == "max":
            return max(values)
        if self._aggregation == "min":
            return min(values)
        return sum(values) / len(values)

    def value_from(self, body: bytes) -> float:
        where = f"metrics-api {safe_url(self._url)}"
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise QueryError(f"{where}: the answer is not JSON") from exc
        try:
            found = json_path(document, self._location)
        except KeyError as exc:
            raise QueryError(
                f"{where}: valueLocation '{self._location}' not found (no '{exc.args[0]}')"
            ) from exc
        value: float | None = None
        if isinstance(found, int | float) and not isinstance(found, bool):
            value = float(found)
        elif isinstance(found, str):
            value = parse_quantity(found)
        if value is None or not math.isfinite(value):
            shown = found if isinstance(found, str) else type(found).__name__
            raise QueryError(
                f"{where}: valueLocation must point to value of type number or a string"
                f" representing a Quantity got: '{shown}'"
            )
        return value

    async def aclose(self) -> None:
        await self._source.aclose()
