"""The aiohttp application serving external.metrics.k8s.io/v1beta1 from the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from metrics_api.admission import Validator, add_admission_routes
from metrics_api.authz import (
    AuthorizationUnavailable,
    Authorizer,
    forbidden_message,
    request_attributes,
    user_from_headers,
)
from metrics_api.quantity import milli_quantity
from metrics_api.source import (
    MetricElsewhere,
    MetricNotFound,
    MetricReading,
    MetricSource,
    MetricUnavailable,
    PeerReader,
)
from metrics_api.tls import TlsManager, peer_common_name
from scaler.values import SelectorError, parse_selector

log = logging.getLogger(__name__)

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP_VERSION}"
DISCOVERY_PATHS = frozenset({f"/apis/{GROUP}", PREFIX})
SO_LABEL = "scaledobject.keda.sh/name"

SOURCE_KEY = web.AppKey("source", MetricSource)
TLS_KEY = web.AppKey("tls", TlsManager)
AUTHZ_KEY = web.AppKey("authorizer", Authorizer)
PEERS_KEY = web.AppKey("peers", PeerReader)


class ApiStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tidal_metrics_api_requests_total",
            "Requests to the external metrics API by HTTP status code",
            ["code"],
            registry=registry,
        )
        self.latency = Histogram(
            "tidal_metrics_api_request_duration_seconds",
            "Time to answer a request to the external metrics API",
            ["code"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )


STATS_KEY = web.AppKey("stats", ApiStats)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, as kube-apiserver relays it to the HPA controller."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _error(
    code: int, reason: str, message: str, details: dict[str, str] | None = None
) -> web.Response:
    body = status_body(code, reason, message)
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    stats = request.app[STATS_KEY]
    try:
        resp = await handler(request)
    except web.HTTPException as exc:  # e.g. 404 for an unknown path: count it, let aiohttp answer
        stats.requests.labels(str(exc.status)).inc()
        stats.latency.labels(str(exc.status)).observe(time.perf_counter() - start)
        raise
    except Exception:
        log.exception("metrics API request failed", extra={"path": request.path})
        resp = _error(500, "InternalError", "internal error")
    code = str(resp.status)
    stats.requests.labels(code).inc()
    stats.latency.labels(code).observe(time.perf_counter() - start)
    return resp


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only the aggregator (client cert from the requestheader CA, allowed CN) may call /apis."""
    if not request.path.startswith("/apis"):
        return await handler(request)
    tls = request.app.get(TLS_KEY)
    if tls is not None:
        trust = tls.trust
        cn = peer_common_name(
            request.transport.get_extra_info("peercert") if request.transport else None
        )
        if trust is None or cn is None or (trust.allowed_names and cn not in trust.allowed_names):
            return _error(401, "Unauthorized", "Unauthorized")
    return await handler(request)


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With an authorizer: the user the aggregator asserted must be allowed this request (a
    SubjectAccessReview, cached). Runs after `authenticate`, so the headers are the proxy's."""
    authorizer = request.app.get(AUTHZ_KEY)
    if authorizer is None or not request.path.startswith("/apis"):
        return await handler(request)
    if request.path in DISCOVERY_PATHS:
        # The aggregator discovers the group as `system:kube-aggregator` with no groups, which
        # no built-in role allows: refusing it makes the group's discovery stale, and then
        # every namespace deletion hangs (NamespaceDeletionDiscoveryFailure). Discovery is a
        # static list of resource kinds; the front-proxy certificate was checked already.
        return await handler(request)
    user = user_from_headers(request.headers.items())
    if not user.name:
        return _error(401, "Unauthorized", "Unauthorized")
    attributes = request_attributes(user, request.method, request.path, request.query)
    try:
        decision = await authorizer.authorize(attributes)
    except AuthorizationUnavailable as exc:
        log.warning(
            "metrics API request not authorized: authorizer unavailable",
            extra={"user": user.name, "path": request.path, "error": str(exc)},
        )
        return _error(500, "InternalError", "authorization check failed; see Tidal's logs")
    if not decision.allowed:
        log.info(
            "metrics API request forbidden",
            extra={"user": user.name, "verb": attributes.verb, "path": request.path},
        )
        details = {"group": attributes.group, "kind": attributes.resource}
        if attributes.name:
            details["name"] = attributes.name
        return _error(
            403,
            "Forbidden",
            forbidden_message(attributes) + (f": {decision.reason}" if decision.reason else ""),
            details if attributes.is_resource else None,
        )
    return await handler(request)


async def discovery(_: web.Request) -> web.Response:
    return web.json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": GROUP_VERSION,
            "resources": [
                {
                    "name": "externalmetrics",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "ExternalMetricValueList",
                    "verbs": ["get"],
                }
            ],
        }
    )


async def group(_: web.Request) -> web.Response:
    gv = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return web.json_response(
        {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": GROUP,
            "versions": [gv],
            "preferredVersion": gv,
        }
    )


async def metric_value(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    metric = request.match_info["metric"]
    try:
        selector = parse_selector(request.query.get("labelSelector", ""))
    except SelectorError as exc:
        return _error(400, "BadRequest", f"invalid labelSelector: {exc}")
    so_name = selector.equals_value(SO_LABEL)
    if not so_name:
        return _error(400, "BadRequest", f"labelSelector must select {SO_LABEL}=<name>")
    try:
        reading = await _read(request.app, namespace, metric, so_name)
    except MetricNotFound:
        return _error(404, "NotFound", f"no metric {metric} for ScaledObject {namespace}/{so_name}")
    except MetricUnavailable as exc:
        log.warning(
            "metric unavailable",
            extra={
                "namespace": namespace,
                "metric": metric,
                "scaledObject": so_name,
                "error": str(exc),
            },
        )
        return _error(500, "InternalError", f"metric {metric} is unavailable; see Tidal's logs")
    return web.json_response(
        {
            "kind": "ExternalMetricValueList",
            "apiVersion": GROUP_VERSION,
            "metadata": {},
            "items": [
                {
                    "metricName": metric,
                    "metricLabels": {},
                    "timestamp": _rfc3339(reading.observed_at),
                    "value": milli_quantity(reading.value),
                }
            ],
        }
    )


async def _read(app: web.Application, namespace: str, metric: str, so_name: str) -> MetricReading:
    """From this replica's store, or (sharded) from the replica that owns the object."""
    try:
        return app[SOURCE_KEY].read(namespace, metric, so_name)
    except MetricElsewhere as owner:
        peers = app.get(PEERS_KEY)
        if peers is None:
            raise MetricUnavailable(str(owner)) from None
        return await peers.read_from(owner, namespace, metric, so_name)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    if request.app[SOURCE_KEY].ready():
        return web.Response(text="ok")
    return web.Response(status=503, text="not ready: watches not synced")


def make_app(
    source: MetricSource,
    registry: CollectorRegistry,
    tls: TlsManager | None = None,
    authorizer: Authorizer | None = None,
    validator: Validator | None = None,
    peers: PeerReader | None = None,
) -> web.Application:
    """`tls=None` disables client authentication (only for plain-HTTP unit tests);
    `authorizer=None` serves every authenticated request (--metrics-authorization=none);
    `validator` serves the admission webhook's paths (metrics_api.admission); `peers` reads
    the objects another replica owns (metrics_api.peer, `--shards auto`)."""
    app = web.Application(middlewares=[observe, authenticate, authorize])
    app[SOURCE_KEY] = source
    app[STATS_KEY] = ApiStats(registry)
    if tls is not None:
        app[TLS_KEY] = tls
    if authorizer is not None:
        app[AUTHZ_KEY] = authorizer
    if peers is not None:
        app[PEERS_KEY] = peers
    app.router.add_get(f"/apis/{GROUP}", group)
    app.router.add_get(PREFIX, discovery)
    # [^/]+, not aiohttp's default [^{}/]+: metric names keep braces, as KEDA's do (a hash-tagged
    # Redis Cluster key {tag}:jobs gives s0-redis-{tag}-jobs), and the HPA must find them.
    app.router.add_get(PREFIX + "/namespaces/{namespace}/{metric:[^/]+}", metric_value)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    if validator is not None:
        add_admission_routes(app, validator)
    return app
